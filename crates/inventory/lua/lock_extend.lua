-- Lock extend: sets a new time-to-live only if the lock is still held with this token.
-- KEYS[1] lock key
-- ARGV[1] token, ARGV[2] ttl ms
-- Returns 1 when extended, 0 when the lock was lost.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
