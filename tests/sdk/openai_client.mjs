// Drive the official OpenAI Node SDK against a running sluice (tests/it/sdk.rs).
// Usage: node openai_client.mjs BASE_URL KEY LIMITED_KEY
// Prints one JSON object: for each scenario what the SDK returned or raised.
import OpenAI from "openai";

const [base, key, limited] = process.argv.slice(2);
const out = {};

async function outcome(fn) {
  try {
    return { ok: await fn() };
  } catch (e) {
    if (e instanceof OpenAI.APIConnectionError) {
      return { connection_error: String(e.cause ?? e) };
    }
    if (e instanceof OpenAI.APIError) {
      return { status: e.status, code: e.code, error: e.constructor.name };
    }
    return { other: String(e) };
  }
}

const messages = [{ role: "user", content: "hi" }];
const client = new OpenAI({ baseURL: base, apiKey: key }); // default retries (2)
out.chat = await outcome(async () =>
  (await client.chat.completions.create({ model: "gpt-4o-mini", messages })).choices[0].message.content
);
out.stream = await outcome(async () => {
  let text = "";
  const stream = await client.chat.completions.create({ model: "gpt-4o-mini", messages, stream: true });
  for await (const c of stream) text += c.choices[0]?.delta?.content ?? "";
  return text;
});

// Refusals sent while the SDK is still uploading: status errors (not retried), never
// connection errors (retried, uploading the body again).
const huge = [{ role: "user", content: "a".repeat(11 * 1024 * 1024) }];
out.too_large = await outcome(() => client.chat.completions.create({ model: "gpt-4o-mini", messages: huge }));
const big = [{ role: "user", content: "a".repeat(6 * 1024 * 1024) }];
const wrong = new OpenAI({ baseURL: base, apiKey: "sk-sluice-" + "x".repeat(43) });
out.bad_key = await outcome(() => wrong.chat.completions.create({ model: "gpt-4o-mini", messages: big }));
const rateLimited = new OpenAI({ baseURL: base, apiKey: limited, maxRetries: 0 });
out.rate_limited = await outcome(() => rateLimited.chat.completions.create({ model: "gpt-4o-mini", messages: big }));
console.log(JSON.stringify(out));
