-- Instance heartbeats: registers (or removes) one instance and counts the live ones.
-- KEYS[1] "{prefix}:instances", a sorted set: member = instance id, score = the instance's last
--         heartbeat in milliseconds of Redis TIME. The set itself expires ARGV[2] ms after the
--         last heartbeat of any instance.
-- ARGV[1] instance id
-- ARGV[2] time to live in milliseconds: an instance without a heartbeat for that long is dead
-- ARGV[3] "1" to register this heartbeat, "0" to remove the instance (clean shutdown)
-- Returns the number of live instances after the change (dead ones are removed first).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZCARD', KEYS[1])
