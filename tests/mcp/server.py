"""An MCP server (the official Python SDK, Streamable HTTP) and a mock OAuth token endpoint, for
tests/it/mcp.rs.

Usage: server.py PORT. Serves:
- /mcp: the MCP endpoint. Every request needs `Authorization: Bearer <token>`, a token from
  /oauth/token that has not expired, or the static token "static-token-for-tests". Tools:
  lookup_customer (answers with PII and a secret), slow (sleeps), create_issue (counted in
  /stats "issues"), delete_everything.
- /oauth/token: client_credentials (client_id "sluice", client_secret "client-secret-canary")
  and refresh_token grants (refresh tokens rotate); tokens last TOKEN_TTL seconds.
- /control (POST JSON): {"fail": true|false, "ttl": seconds, "revoke": true (every access
  token issued so far stops working)}.
- /stats: {"grants", "refresh_grants", "authorizations" (every Authorization value seen), "rejected"}.
Prints "ready" once listening.
"""
import asyncio
import itertools
import json
import sys
import time

import uvicorn
from mcp.server.fastmcp import FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PORT = int(sys.argv[1])
STATIC = "static-token-for-tests"
state = {"fail": False, "ttl": 3.0, "grants": 0, "refresh_grants": 0, "rejected": 0}
tokens = {}  # access token -> expiry (monotonic)
refresh_tokens = {"refresh-canary-0"}
seen = []
counter = itertools.count(1)

mcp = FastMCP("tools", host="127.0.0.1", port=PORT)


@mcp.tool()
def lookup_customer(customer_id: str) -> str:
    """Look a customer up."""
    return (f"Customer {customer_id}: Jane Doe, jane.doe@example.com, card 4111 1111 1111 1111, "
            "api key AKIAWBOBYXE3TVGJGRWA")


@mcp.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "done"


@mcp.tool()
def create_issue(title: str) -> str:
    """Open an issue (the README's example tool)."""
    state["issues"] = state.get("issues", 0) + 1
    return f"issue created: {title}"


@mcp.tool()
def delete_everything() -> str:
    """Never to be called through sluice."""
    return "everything deleted"


def issue():
    tok = f"tok-{next(counter)}"
    tokens[tok] = time.monotonic() + state["ttl"]
    return tok


async def token(request: Request):
    if state["fail"]:
        return JSONResponse({"error": "temporarily_unavailable"}, status_code=503)
    form = await request.form()
    grant = form.get("grant_type")
    if grant == "client_credentials":
        if form.get("client_id") != "sluice" or form.get("client_secret") != "client-secret-canary":
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        state["grants"] += 1
        return JSONResponse({"access_token": issue(), "token_type": "Bearer",
                             "expires_in": state["ttl"]})
    if grant == "refresh_token":
        rt = form.get("refresh_token")
        if rt not in refresh_tokens:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        refresh_tokens.discard(rt)
        new_rt = f"refresh-canary-{next(counter)}"
        refresh_tokens.add(new_rt)
        state["refresh_grants"] += 1
        return JSONResponse({"access_token": issue(), "token_type": "Bearer",
                             "expires_in": state["ttl"], "refresh_token": new_rt})
    return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)


async def control(request: Request):
    change = await request.json()
    if change.pop("revoke", False):
        tokens.clear()
    state.update(change)
    return JSONResponse(state)


async def stats(request: Request):
    return JSONResponse({**state, "authorizations": seen})


app = mcp.streamable_http_app()
app.router.routes.extend([
    Route("/oauth/token", token, methods=["POST"]),
    Route("/control", control, methods=["POST"]),
    Route("/stats", stats, methods=["GET"]),
])


class CheckBearer:
    """The MCP endpoint's resource-server side: only valid bearer tokens get in."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/mcp"):
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            seen.append(auth)
            tok = auth.removeprefix("Bearer ")
            valid = tok == STATIC or tokens.get(tok, 0) > time.monotonic()
            if not valid:
                state["rejected"] += 1
                resp = JSONResponse({"error": "invalid_token"}, status_code=401)
                return await resp(scope, receive, send)
        return await self.inner(scope, receive, send)


class Ready(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        print("ready", flush=True)


config = uvicorn.Config(CheckBearer(app), host="127.0.0.1", port=PORT, log_level="warning",
                        lifespan="on")
Ready(config).run()
