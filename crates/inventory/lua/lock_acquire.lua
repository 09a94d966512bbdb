-- Lock acquire: SET NX PX with the holder's random token; on success a fencing token, strictly
-- increasing across every acquisition of this lock.
-- KEYS[1] lock key, KEYS[2] fencing counter
-- ARGV[1] token, ARGV[2] ttl ms
-- Returns the fencing token (> 0) when acquired, 0 when held by someone else.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return 0
