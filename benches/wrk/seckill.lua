-- wrk script for the purchase endpoint: every request is a new buyer of one product.
--   PRODUCT=1001 wrk -t2 -c64 -d30s -s benches/wrk/seckill.lua \
--     http://localhost:8083/api/v1/seckill/purchase
-- (the specification's load test, `wrk -t12 -c400 -d30s --script=... .../purchase`, works the
-- same way). Each thread counts its own user ids from thread_index * 100000000, so ids never
-- repeat across threads.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local product = os.getenv("PRODUCT") or "1001"
local threads = 0
local user = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_index", threads)
end

function init(args)
  user = thread_index * 100000000
end

function request()
  user = user + 1
  return wrk.format(nil, nil, nil,
    string.format('{"product_id":%s,"user_id":%d,"quantity":1}', product, user))
end

function done(summary, latency, requests)
  io.write(string.format("requests: %d, p50 %.2f ms, p99 %.2f ms\n",
    summary.requests, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
