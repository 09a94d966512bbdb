-- Purchase: checks and sells atomically, and hands the sale to the outbox in the same step.
-- KEYS[1] activity hash   {status, start, end, limit, stock, epoch, price, exp, ...}
-- KEYS[2] buyers hash     user -> order seq
-- KEYS[3] orders hash     seq -> "user|qty|epoch|state" (state 0 live, 1 cancelled)
-- KEYS[4] order sequence  counter, never reset (order ids stay unique across epochs)
-- KEYS[5] outbox stream   one entry per sale: order, product, user, qty, price, ts, epoch
-- KEYS[6] idempotency     hash "user:key" -> "seq|remaining|qty"
-- ARGV[1] user id, ARGV[2] quantity, ARGV[3] idempotency key or "", ARGV[4] product id
-- Returns {1, seq, remaining} sold; {2, seq, remaining} replay of an earlier sale with the same
-- key; {-1} unknown product; {-2, stock} sold out; {-3} already bought; {-4} inactive;
-- {-5} not started; {-6} ended; {-7, limit} invalid quantity; {-8} the key was used with
-- another quantity.
local a = redis.call('HMGET', KEYS[1], 'status', 'start', 'end', 'limit', 'stock', 'epoch', 'price', 'exp')
if not a[1] then return {-1} end
if a[1] ~= 'active' then return {-4} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(a[2]) then return {-5} end
if now >= tonumber(a[3]) then return {-6} end
local limit = tonumber(a[4])
local qty = tonumber(ARGV[2])
if not qty or qty < 1 or qty > limit then return {-7, limit} end
local user = ARGV[1]
if ARGV[3] ~= '' then
  local prev = redis.call('HGET', KEYS[6], user .. ':' .. ARGV[3])
  if prev then
    local s1 = string.find(prev, '|', 1, true)
    local s2 = string.find(prev, '|', s1 + 1, true)
    if s2 and tonumber(string.sub(prev, s2 + 1)) ~= qty then return {-8} end
    return {2, tonumber(string.sub(prev, 1, s1 - 1)), tonumber(string.sub(prev, s1 + 1, (s2 or 0) - 1))}
  end
end
if redis.call('HEXISTS', KEYS[2], user) == 1 then return {-3} end
local stock = tonumber(a[5])
if stock < qty then return {-2, stock} end
local remaining = redis.call('HINCRBY', KEYS[1], 'stock', -qty)
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[2], user, seq)
redis.call('HSET', KEYS[3], seq, user .. '|' .. qty .. '|' .. a[6] .. '|0')
redis.call('XADD', KEYS[5], '*', 'order', seq, 'product', ARGV[4], 'user', user, 'qty', qty,
  'price', a[7], 'ts', now, 'epoch', a[6])
redis.call('PEXPIREAT', KEYS[2], a[8])
redis.call('PEXPIREAT', KEYS[3], a[8])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[6], user .. ':' .. ARGV[3], seq .. '|' .. remaining .. '|' .. qty)
  redis.call('PEXPIREAT', KEYS[6], a[8])
end
return {1, seq, remaining}
