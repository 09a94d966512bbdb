-- GCRA (generic cell rate algorithm) token bucket, on Redis's own clock.
-- KEYS[1] the bucket: a string holding the theoretical arrival time (TAT) in microseconds of
--         Redis TIME (fractional, "%.3f"); hash-tagged "{prefix:key}" so it has one slot.
-- ARGV[1] emission interval in microseconds per permit (1e6 / rate, may be fractional)
-- ARGV[2] burst, in permits (the bucket's capacity)
-- ARGV[3] n, permits asked for (1 <= n <= burst; the caller checks)
-- Returns {1, 0} admitted (the TAT moved on by n intervals; the key expires when the bucket
-- is full again), or {0, retry_after_us}: rejected, nothing written, and the same request
-- succeeds after retry_after_us microseconds (rounded up) if nobody else takes permits.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + n * interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl_ms)
return {1, 0}
