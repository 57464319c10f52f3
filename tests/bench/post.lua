-- wrk script for `make bench`: a non-streaming chat completion POST.
--   BENCH_KEY=pm-... wrk -t1 -c64 -d10s --latency -s tests/bench/post.lua http://127.0.0.1:PORT
-- The path is fixed here (the URL's path is ignored). "max_tokens":64 keeps
-- pinmeter's reservation small. done() prints one machine-readable line:
--   WRK requests=N duration_us=D rps=R p50_us=.. p90_us=.. p99_us=.. p999_us=..
--       max_us=.. err_connect=.. err_read=.. err_write=.. err_timeout=.. err_status=..
-- (err_status counts non-2xx/3xx replies, e.g. 402 or 503 from the proxy).

local key = os.getenv("BENCH_KEY") or "pm-bench-key"
local model = os.getenv("BENCH_MODEL") or "anthropic/claude-haiku-4-5"

wrk.method = "POST"
wrk.path = "/v0/llm/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"system","content":' ..
  '"You are a terse assistant."},{"role":"user","content":"Say hello in five words."}],' ..
  '"max_tokens":64,"temperature":0.2}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d " ..
    "max_us=%d err_connect=%d err_read=%d err_write=%d err_timeout=%d err_status=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, e.connect, e.read, e.write, e.timeout, e.status))
end
