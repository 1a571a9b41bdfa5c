"""An MCP server that requires OAuth, with its own authorization server: both from the official
MCP Python SDK (FastMCP with `auth_server_provider`: `create_auth_routes` for /authorize,
/token, /register, /revoke and the RFC 8414 metadata; RFC 9728 protected resource metadata for
/mcp), for tests/it/oauth_connect.rs. The provider is in memory and approves every
authorization request at once (the test user), as the SDK's simple-auth example does with its
login page skipped.

Usage: auth_server.py PORT. Also serves:
- /control (POST JSON): {"ttl": seconds (access tokens issued from now on), "forget_refresh":
  true (every refresh token stops working: the user revoked access), "metadata": {...} (members
  merged into the authorization server metadata; null removes one), "prm": {...} (the same for
  the protected resource metadata), "hint": URL (the resource_metadata the 401 of /mcp names),
  "plain_metadata": true (serve the SDK's documents and 401 again)}.
- /stats: {"registrations", "clients" (id, secret, auth method), "authorizations" (resource,
  scopes, redirect_uri per request), "codes", "verifiers" (code_verifier of each /token
  request), "access_tokens", "refresh_tokens", "revoked" (tokens), "refreshes", "calls"}.
Prints "ready" once listening.
"""
import json
import secrets
import sys
import math
import time
import urllib.parse

import uvicorn
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    RefreshToken,
    construct_redirect_uri,
)
from mcp.server.auth.routes import build_metadata
from mcp.server.auth.settings import AuthSettings, ClientRegistrationOptions, RevocationOptions
from mcp.server.fastmcp import FastMCP
from mcp.shared.auth import OAuthToken
from pydantic import AnyHttpUrl
from starlette.responses import JSONResponse

PORT = int(sys.argv[1])
BASE = f"http://127.0.0.1:{PORT}"
state = {"ttl": 3600, "metadata": None, "prm": None, "hint": None}
stats = {"registrations": 0, "clients": [], "authorizations": [], "codes": [], "verifiers": [],
         "access_tokens": [], "refresh_tokens": [], "revoked": [], "refreshes": 0, "calls": 0}


class Provider:
    def __init__(self):
        self.clients, self.codes, self.access, self.refresh = {}, {}, {}, {}

    async def get_client(self, client_id):
        return self.clients.get(client_id)

    async def register_client(self, info):
        self.clients[info.client_id] = info
        stats["registrations"] += 1
        stats["clients"].append({"id": info.client_id, "secret": info.client_secret,
                                 "auth": info.token_endpoint_auth_method})

    async def authorize(self, client, params):
        code = "code-" + secrets.token_urlsafe(24)
        self.codes[code] = AuthorizationCode(
            code=code, scopes=params.scopes or [], expires_at=time.time() + 300,
            client_id=client.client_id, code_challenge=params.code_challenge,
            redirect_uri=params.redirect_uri,
            redirect_uri_provided_explicitly=params.redirect_uri_provided_explicitly,
            resource=params.resource, subject="test-user")
        stats["codes"].append(code)
        stats["authorizations"].append({"resource": params.resource, "scopes": params.scopes,
                                        "redirect_uri": str(params.redirect_uri)})
        return construct_redirect_uri(str(params.redirect_uri), code=code, state=params.state)

    async def load_authorization_code(self, client, code):
        c = self.codes.get(code)
        return c if c and c.client_id == client.client_id else None

    def issue(self, client_id, scopes, resource):
        at, rt = "at-" + secrets.token_urlsafe(24), "rt-" + secrets.token_urlsafe(24)
        ttl = int(state["ttl"])
        self.access[at] = AccessToken(token=at, client_id=client_id, scopes=scopes,
                                      expires_at=math.ceil(time.time() + ttl), resource=resource)
        self.refresh[rt] = (RefreshToken(token=rt, client_id=client_id, scopes=scopes), resource)
        stats["access_tokens"].append(at)
        stats["refresh_tokens"].append(rt)
        return OAuthToken(access_token=at, token_type="Bearer", expires_in=ttl,
                          refresh_token=rt, scope=" ".join(scopes))

    async def exchange_authorization_code(self, client, code):
        self.codes.pop(code.code, None)
        return self.issue(client.client_id, code.scopes, code.resource)

    async def load_refresh_token(self, client, token):
        r = self.refresh.get(token)
        return r[0] if r and r[0].client_id == client.client_id else None

    async def exchange_refresh_token(self, client, token, scopes):
        _, resource = self.refresh.pop(token.token)
        stats["refreshes"] += 1
        return self.issue(client.client_id, scopes or token.scopes, resource)

    async def load_access_token(self, token):
        a = self.access.get(token)
        if a is None or (a.expires_at and a.expires_at < time.time()):
            return None
        return a

    async def revoke_token(self, token):
        stats["revoked"].append(token.token)
        self.access.pop(token.token, None)
        self.refresh.pop(token.token, None)


provider = Provider()
auth = AuthSettings(
    issuer_url=AnyHttpUrl(BASE),
    resource_server_url=AnyHttpUrl(f"{BASE}/mcp"),
    validate_token_resource=True,
    required_scopes=["tools"],
    client_registration_options=ClientRegistrationOptions(
        enabled=True, valid_scopes=["tools"], default_scopes=["tools"]),
    revocation_options=RevocationOptions(enabled=True),
)
mcp = FastMCP("oauth-tools", host="127.0.0.1", port=PORT, auth=auth,
              auth_server_provider=provider)


@mcp.tool()
def whoami() -> str:
    """Say who is calling."""
    stats["calls"] += 1
    return "test-user"


inner = mcp.streamable_http_app()
SDK_METADATA = json.loads(build_metadata(
    auth.issuer_url, None, auth.client_registration_options, auth.revocation_options,
).model_dump_json(exclude_none=True))


async def read_all(receive):
    body, more = b"", True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    return body


async def app(scope, receive, send):
    path = scope.get("path", "")
    if scope["type"] == "http" and path == "/control":
        change = json.loads(await read_all(receive))
        if "ttl" in change:
            state["ttl"] = change["ttl"]
        if change.get("forget_refresh"):
            provider.refresh.clear()
        if change.get("plain_metadata"):
            state["metadata"] = state["prm"] = state["hint"] = None
        for k in ("metadata", "prm", "hint"):
            if k in change:
                state[k] = change[k]
        return await JSONResponse({"ok": True})(scope, receive, send)
    if scope["type"] == "http" and path == "/stats":
        return await JSONResponse(stats)(scope, receive, send)
    if (scope["type"] == "http" and path == "/.well-known/oauth-authorization-server"
            and state["metadata"] is not None):
        doc = dict(SDK_METADATA)
        for k, v in state["metadata"].items():
            if v is None:
                doc.pop(k, None)
            else:
                doc[k] = v
        return await JSONResponse(doc)(scope, receive, send)
    if (scope["type"] == "http" and path == "/.well-known/oauth-protected-resource/mcp"
            and state["prm"] is not None):
        doc = {"resource": f"{BASE}/mcp", "authorization_servers": [f"{BASE}/"],
               "scopes_supported": ["tools"], "bearer_methods_supported": ["header"]}
        doc.update(state["prm"])
        return await JSONResponse(doc)(scope, receive, send)
    if (scope["type"] == "http" and path == "/mcp" and state["hint"] is not None
            and not any(k == b"authorization" for k, _ in scope["headers"])):
        return await JSONResponse(
            {"error": "invalid_token"}, status_code=401,
            headers={"WWW-Authenticate": f'Bearer resource_metadata="{state["hint"]}"'},
        )(scope, receive, send)
    if scope["type"] == "http" and path == "/token":
        body = await read_all(receive)
        form = urllib.parse.parse_qs(body.decode())
        stats["verifiers"].extend(form.get("code_verifier", []))
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await inner(scope, replay, send)
    return await inner(scope, receive, send)


class Ready(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        print("ready", flush=True)


Ready(uvicorn.Config(app, host="127.0.0.1", port=PORT, log_level="warning")).run()
