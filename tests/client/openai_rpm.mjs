// The openai npm SDK with its default retries (2) looping N requests on one
// key: with rpm set on that key, the 429s carry Retry-After (and
// retry-after-ms) and the SDK's own retries must carry every request through.
//   node openai_rpm.mjs   (env: PINMETER_URL, PINMETER_KEY, MODEL, N)
// Prints one JSON line: {"ok", "errors", "retried", "seconds"}.
import OpenAI from "openai";

const baseURL = process.env.PINMETER_URL;
const apiKey = process.env.PINMETER_KEY;
const model = process.env.MODEL || "anthropic/claude-sonnet-4-6";
const n = Number(process.env.N || 60);
const client = new OpenAI({ baseURL, apiKey, timeout: 120000 });   // default maxRetries
const t0 = Date.now();
const out = { ok: 0, errors: [], retried: 0, seconds: 0 };
for (let i = 0; i < n; i++) {
  try {
    const { response } = await client.chat.completions
      .create({ model, messages: [{ role: "user", content: "agent step " + i }], max_tokens: 16 })
      .withResponse();
    out.ok++;
    if (response.headers.get("x-ratelimit-remaining-requests") === null) out.errors.push("no headers");
  } catch (e) {
    out.errors.push(String(e && e.message || e));
  }
}
out.seconds = (Date.now() - t0) / 1000;
console.log(JSON.stringify(out));
