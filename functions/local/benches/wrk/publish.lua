-- wrk script of the load benchmark (benches/load.rs): POST /scanned_parcel/1 with the seed's
-- envelope over keep-alive connections.
--   BUSWAY_BENCH_KEY   the bearer key sent
--   BUSWAY_BENCH_UNITS 0: one static body without an event_id (the broker makes one); N > 0: a
--                      body per request for target unit u0..uN-1 in turn, whose event_id carries
--                      the wall-clock send time in µs, so the consumer can time the delivery.
-- done() prints one line for the benchmark to read: requests, non-2xx answers, socket errors,
-- the run's length and latency percentiles, all in µs.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } busway_timespec;
int clock_gettime(int clock, busway_timespec *tp);
]]

local units = tonumber(os.getenv("BUSWAY_BENCH_UNITS") or "0")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BUSWAY_BENCH_KEY") or "")

local function envelope(target, event_id)
  local id = ""
  if event_id then
    id = ',"event_id":"' .. event_id .. '"'
  end
  return '{"metadata":{"event_attributes":{"source":"scanner-17","target":"' .. target .. '"}' .. id
    .. '},"data":{"dest_postal_code":"1234AB","dest_house":7,"parcel_weight":1.5}}'
end

if units == 0 then
  wrk.body = envelope("u2", nil)
else
  local now = ffi.new("busway_timespec")
  local n = 0
  local run = tostring(math.random(1, 1000000000))
  function request()
    n = n + 1
    ffi.C.clock_gettime(0, now)
    local micros = tonumber(now.tv_sec) * 1000000 + math.floor(tonumber(now.tv_nsec) / 1000)
    local id = string.format("t%d-%s-%d", micros, run, n)
    return wrk.format(nil, nil, nil, envelope("u" .. (n % units), id))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "busway-bench requests=%d non2xx=%d socket_errors=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
