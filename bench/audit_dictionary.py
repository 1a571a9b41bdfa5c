#!/usr/bin/env python3
"""How src/store/audit_details.zdict was made: a zstd dictionary trained on synthetic audit
details shaped as the data plane writes them (`proxy.request`, `mcp.call`, `mcp.request`, a few
admin actions). Audit details are compressed against it (store/pack.rs) to about a sixth of
their JSON, faster than against raw text, because a trained dictionary carries entropy tables
that small records reuse.

The dictionary is fixed forever: records compressed against it are read with it, and a unit
test pins its SHA-256. Running this again makes a different file (zstd's trainer is not bound
to be reproducible across versions); a new dictionary needs a new tag in pack.rs, never a
replaced file. Needs `pip install zstandard`.

    python3 bench/audit_dictionary.py /tmp/new.zdict
"""

import json
import random
import sys
import uuid

import zstandard

SIZE = 2048
rnd = random.Random(41)


def uid():
    """A UUIDv7 of late 2026, as sluice makes them (time first)."""
    ms = 1_795_000_000_000 + rnd.randrange(100 * 86_400_000)
    n = (ms << 80) | (0x7 << 76) | (rnd.getrandbits(12) << 64) | (0b10 << 62) \
        | rnd.getrandbits(62)
    return str(uuid.UUID(int=n))


def counts():
    return {
        e: rnd.choice([0] * 12 + [1, 2, 3])
        for e in ["email", "ssn", "phone", "card", "secret"]
    }


ROUTES = [
    ("/v1/chat/completions", "chat_completions"),
    ("/v1/chat/completions", "chat_completions"),
    ("/v1/embeddings", "embeddings"),
    ("/v1/responses", "responses"),
    ("/v1/completions", "completions"),
    ("/v1/models", "models"),
]
MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "text-embedding-3-small", "o3-mini", None]
CODES = [None] * 8 + [
    "invalid_api_key", "rate_limited", "budget_exceeded", "pii_blocked", "secret_blocked",
    "upstream_unavailable", "upstream_timeout", "bad_request", "forbidden_model",
]
STATUS = {None: 200, "invalid_api_key": 401, "rate_limited": 429, "budget_exceeded": 429,
          "pii_blocked": 422, "secret_blocked": 422, "upstream_unavailable": 502,
          "upstream_timeout": 504, "bad_request": 400, "forbidden_model": 403}


def request(mcp=None):
    path, route = ROUTES[rnd.randrange(len(ROUTES))]
    code = rnd.choice(CODES)
    d = {
        "method": "GET" if route == "models" else "POST",
        "path": path,
        "route": route,
        "key_id": uid() if code != "invalid_api_key" else None,
        "model": rnd.choice(MODELS),
        "region": rnd.choice(["us", "eu", "us", "eu", "apac"]),
        "upstream": rnd.choice(["openai", "openai-us", "azure-eu", "anthropic", "mock"]),
        "status": STATUS[code],
        "code": code,
        "latency_ms": round(rnd.random() * rnd.choice([5, 500, 5000]), 3),
        "bytes_in": rnd.randint(0, 200000),
        "bytes_out": rnd.randint(0, 200000),
        "redactions": counts(),
        "response_redactions": counts(),
        "usage": None if code or rnd.random() < 0.1 else {
            "input_tokens": rnd.randint(1, 20000), "output_tokens": rnd.randint(0, 4000)},
    }
    if mcp:
        server = rnd.choice(["github", "linear", "files", "search"])
        d.update(path=f"/mcp/{server}", route="mcp", status=rnd.choice([200, 200, 202, 401]))
        del d["upstream"], d["model"]
        d["usage"] = None
        if mcp == "call":
            d.update(server=server,
                     method=rnd.choice(["tools/call", "tools/list", "initialize",
                                        "notifications/initialized", "resources/read",
                                        "prompts/get", "ping"]),
                     name=rnd.choice([None, "search_issues", "create_issue", "read_file"]),
                     outcome=rnd.choice(["success", "success", "sent", "error",
                                         "no_response", "refused", "batch_refused"]))
        else:
            d.update(server=server, http_method=rnd.choice(["GET", "DELETE"]))
    return d


def admin():
    return rnd.choice([
        {"name": "team-" + str(rnd.randint(1, 99)), "key_fingerprint": uid()[:8]},
        {"hard": True, "keys": rnd.randint(0, 9), "users": rnd.randint(0, 9)},
        {"second_factor": rnd.choice(["totp", "recovery_code", "none"])},
        {"reason": rnd.choice(["bad_password", "bad_totp", "locked"])},
        {"role": rnd.choice(["owner", "admin", "auditor", "member"])},
        {"error": rnd.choice(["invalid_request", "not_found", "conflict"])},
    ])


def sample():
    r = rnd.random()
    d = request() if r < 0.75 else request("call") if r < 0.9 else request("stream") \
        if r < 0.95 else admin()
    return json.dumps(d, separators=(",", ":")).encode()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "audit_details.zdict"
    samples = [sample() for _ in range(20000)]
    d = zstandard.train_dictionary(SIZE, samples, level=3)
    with open(out, "wb") as f:
        f.write(d.as_bytes())
    c = zstandard.ZstdCompressor(level=3, dict_data=d, write_checksum=False,
                                 write_dict_id=False)
    test = [sample() for _ in range(2000)]
    z = sum(len(c.compress(s)) for s in test) / len(test)
    print(f"{out}: {len(d.as_bytes())} bytes; details {sum(map(len, test)) / len(test):.0f}"
          f" -> {z:.0f} bytes")


if __name__ == "__main__":
    main()
