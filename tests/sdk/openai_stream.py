"""Read a (rewritten) stream through sluice with the official OpenAI Python SDK's parser.

Usage: openai_stream.py BASE_URL KEY X_MOCK. Prints {"content": ..., "finish_reason": ...}.
"""
import json
import sys

import openai

base, key, mock = sys.argv[1:4]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
content, finish = "", None
for chunk in client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "hi"}],
    stream=True,
    extra_headers={"X-Mock": mock},
):
    if chunk.choices:
        content += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
print(json.dumps({"content": content, "finish_reason": finish}))
