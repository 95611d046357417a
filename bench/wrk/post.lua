-- post.lua — wrk script: POSTs the body in $BODY_FILE to $REQ_PATH (with
-- Inference-Header-Content-Length: $IHCL when set) and prints one JSON summary line.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.path = os.getenv("REQ_PATH") or "/"
local ihcl = os.getenv("IHCL")
if ihcl and ihcl ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = ihcl
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    summary.requests / summary.duration * 1e6, latency:percentile(50), latency:percentile(99), latency.mean))
end
