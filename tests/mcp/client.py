"""The official MCP Python client (Streamable HTTP) against sluice, with only a sluice key.

Usage: client.py URL KEY SCRIPT, SCRIPT a JSON list of steps:
  ["list"], ["call", tool, {args}], ["sleep", seconds].
Prints one JSON object: the session id and, per step, what came back or what was raised.
"""
import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client


async def main(url, key, steps):
    out = {"steps": []}
    async with streamablehttp_client(url, headers={"Authorization": f"Bearer {key}"}) as (r, w, sid):
        async with ClientSession(r, w) as s:
            init = await s.initialize()
            out["server"] = init.serverInfo.name
            out["session_id"] = sid()
            for step in steps:
                try:
                    if step[0] == "list":
                        tools = await s.list_tools()
                        out["steps"].append({"tools": sorted(t.name for t in tools.tools)})
                    elif step[0] == "call":
                        res = await s.call_tool(step[1], step[2])
                        out["steps"].append({"is_error": res.isError,
                                             "text": " ".join(c.text for c in res.content
                                                              if getattr(c, "text", None))})
                    elif step[0] == "sleep":
                        await asyncio.sleep(step[1])
                        out["steps"].append({"slept": step[1]})
                except Exception as e:  # a JSON-RPC error comes back as McpError
                    err = getattr(e, "error", None)
                    out["steps"].append({"error": repr(e), "code": getattr(err, "code", None),
                                         "message": getattr(err, "message", None)})
    print(json.dumps(out))


asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
