-- Prewarm: loads an activity; the same activity again changes nothing; a different one starts a
-- new epoch (fresh stock, buyers and orders) unless the loaded sale has started and force is not
-- set. The outbox is kept: sales of an earlier epoch still in transit must arrive. Idempotency
-- keys are kept too: a retry of a purchase of an earlier epoch gets its first answer, never a
-- second sale. A missing order sequence (a Redis that forgot) starts from the base given, which
-- carries a fresh nonce, so order ids never repeat.
-- KEYS[1] activity hash, KEYS[2] buyers, KEYS[3] orders, KEYS[4] idempotency,
-- KEYS[5] epoch counter, KEYS[6] outbox stream, KEYS[7] order sequence
-- ARGV[1] fingerprint, ARGV[2] name, ARGV[3] price cents, ARGV[4] stock, ARGV[5] start ms,
-- ARGV[6] end ms, ARGV[7] status, ARGV[8] per-user limit, ARGV[9] force "1"/"0",
-- ARGV[10] expire-at ms, ARGV[11] outbox consumer group, ARGV[12] order sequence base
-- Returns {0, epoch} unchanged; {1, epoch} created; {2, epoch} replaced; {-1} sale started.
local cur = redis.call('HMGET', KEYS[1], 'fp', 'start', 'epoch')
local existed = cur[1] ~= false
if existed then
  if cur[1] == ARGV[1] then return {0, tonumber(cur[3])} end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if ARGV[9] ~= '1' and now >= tonumber(cur[2]) then return {-1} end
end
local epoch = redis.call('INCR', KEYS[5])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('SET', KEYS[7], ARGV[12], 'NX')
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'name', ARGV[2], 'price', ARGV[3], 'initial', ARGV[4],
  'stock', ARGV[4], 'start', ARGV[5], 'end', ARGV[6], 'status', ARGV[7], 'limit', ARGV[8],
  'epoch', epoch, 'cancelled', 0, 'exp', ARGV[10])
redis.call('PEXPIREAT', KEYS[1], ARGV[10])
-- The per-sale hashes carry the expiry from now on (a placeholder keeps each from vanishing
-- when emptied), so a sale writes no TTL.
for i = 2, 4 do
  redis.call('HSET', KEYS[i], '_', '')
  redis.call('PEXPIREAT', KEYS[i], ARGV[10])
end
-- The consumer group reads the outbox from its beginning; it may exist from an earlier epoch.
pcall(redis.call, 'XGROUP', 'CREATE', KEYS[6], ARGV[11], '0', 'MKSTREAM')
if existed then return {2, epoch} end
return {1, epoch}
