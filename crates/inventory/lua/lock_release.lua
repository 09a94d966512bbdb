-- Lock release: deletes the lock only if it is still held with this token (compare and delete).
-- KEYS[1] lock key
-- ARGV[1] token
-- Returns 1 when released, 0 when the lock was lost (expired, or taken by another holder).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
