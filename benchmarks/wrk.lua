-- wrk script of benchmarks/run.py. Method, body and Authorization come from the environment.
-- With BENCH_LIST (a file of single-use values, one a line), each request carries the next
-- value: as its body (BENCH_LIST_KIND=body) or as the header BENCH_LIST_KIND names (DPoP).
-- Thread n of BENCH_THREADS sends lines n, n + BENCH_THREADS, ...; a thread with fewer than
-- BENCH_MARGIN values left stops, so that no value is ever sent twice (the run is then
-- shorter, and its rate still requests / elapsed time). done() prints one JSON line.
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local auth = os.getenv("BENCH_AUTH")
local list_path = os.getenv("BENCH_LIST") or ""
local list_kind = os.getenv("BENCH_LIST_KIND") or "body"
local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
local margin = tonumber(os.getenv("BENCH_MARGIN") or "0")

wrk.method = method
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

local created = 0
function setup(thread)
  thread:set("thread_number", created)
  created = created + 1
end

if list_path ~= "" then
  local requests = {}
  local index = 0

  function init(args)
    local line_number = 0
    if list_kind == "body" then
      wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
    end
    for line in io.lines(list_path) do
      if line_number % threads == thread_number then
        local headers = {}
        for name, value in pairs(wrk.headers) do
          headers[name] = value
        end
        local request_body = wrk.body
        if list_kind == "body" then
          request_body = line
        else
          headers[list_kind] = line
        end
        requests[#requests + 1] = wrk.format(method, nil, headers, request_body)
      end
      line_number = line_number + 1
    end
  end

  function request()
    index = index + 1
    if index >= #requests - margin then
      wrk.thread:stop()
    end
    if index > #requests then
      index = #requests
    end
    return requests[index]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"status_errors": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
