-- wrk script: KServe v2 infer POST with a 64-float JSON body (678 bytes).
-- The request is static (no request() function), so wrk builds it once.
wrk.method = "POST"
wrk.path = "/v2/models/mlp/infer"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"x","shape":[1,64],"datatype":"FP32","data":[-0.352334,-0.698302,0.301869,-0.855127,0.071764,-0.268622,-0.884002,0.014871,-0.925009,-0.132709,-0.860289,-0.818574,-0.150962,0.653704,-0.752396,-0.553522,0.254866,0.895418,0.154206,-0.206639,0.952510,-0.906835,0.716937,-0.420781,-0.711490,-0.764416,-0.383036,0.632253,-0.638547,0.163200,0.277827,-0.255205,0.095489,-0.874422,-0.880798,-0.588083,0.360800,-0.144815,-0.371706,0.171124,-0.093631,-0.400466,0.588759,0.397989,-0.511807,0.148847,0.050393,0.750275,0.458891,-0.424124,0.960350,-0.763868,-0.163754,0.514282,-0.696031,-0.022074,-0.921585,0.336432,0.529142,0.146052,0.750956,-0.372505,0.390591,0.188740]}]}'

-- Machine-readable summary for run.sh (latency in microseconds).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
