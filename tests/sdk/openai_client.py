"""Drive the official OpenAI Python SDK against a running sluice (tests/it/sdk.rs).

Usage: openai_client.py BASE_URL KEY LIMITED_KEY
Prints one JSON object: for each scenario what the SDK returned or raised.
"""
import json
import sys

import openai

base, key, limited = sys.argv[1], sys.argv[2], sys.argv[3]
out = {"sdk_version": openai.__version__}


def outcome(fn):
    try:
        return {"ok": fn()}
    except openai.APIStatusError as e:
        return {"status": e.status_code, "code": e.code, "error": type(e).__name__}
    except openai.APIConnectionError as e:
        return {"connection_error": repr(e)}


messages = [{"role": "user", "content": "hi"}]
client = openai.OpenAI(base_url=base, api_key=key)  # default retries (2)
out["chat"] = outcome(
    lambda: client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    .choices[0]
    .message.content
)
out["stream"] = outcome(
    lambda: "".join(
        (c.choices[0].delta.content or "")
        for c in client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True
        )
        if c.choices
    )
)

# Refusals sent while the SDK is still uploading: they must reach it as status errors (which it
# does not retry), never as connection errors (which it retries).
huge = [{"role": "user", "content": "a" * (11 * 1024 * 1024)}]
out["too_large"] = outcome(
    lambda: client.chat.completions.create(model="gpt-4o-mini", messages=huge)
)
big = [{"role": "user", "content": "a" * (6 * 1024 * 1024)}]
wrong = openai.OpenAI(base_url=base, api_key="sk-sluice-" + "x" * 43)
out["bad_key"] = outcome(
    lambda: wrong.chat.completions.create(model="gpt-4o-mini", messages=big)
)
# 429 is retried by the SDK by design (after Retry-After); without retries it must surface as
# RateLimitError, not a connection error.
rate_limited = openai.OpenAI(base_url=base, api_key=limited, max_retries=0)
out["rate_limited"] = outcome(
    lambda: rate_limited.chat.completions.create(model="gpt-4o-mini", messages=big)
)
print(json.dumps(out))
