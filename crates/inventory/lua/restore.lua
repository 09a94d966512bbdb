-- Restore: loads an activity as the order store records its sale, when Redis forgot it. It
-- overwrites nothing (with an activity loaded it changes nothing) unless repair is set: then the
-- loaded stock and buyers are rebuilt from the record (the reconciler's repair).
-- KEYS[1] activity hash, KEYS[2] buyers, KEYS[3] orders, KEYS[4] idempotency,
-- KEYS[5] epoch counter, KEYS[6] outbox stream, KEYS[7] order sequence
-- ARGV[1] fingerprint, ARGV[2] name, ARGV[3] price cents, ARGV[4] stock, ARGV[5] start ms,
-- ARGV[6] end ms, ARGV[7] status, ARGV[8] per-user limit, ARGV[9] expire-at ms,
-- ARGV[10] outbox consumer group, ARGV[11] epoch, ARGV[12] order sequence base,
-- ARGV[13] repair "1"/"0", then three per recorded live order: seq, user, quantity
-- Returns {0, epoch} when an activity was loaded already; {3, epoch, remaining} restored.
local cur = redis.call('HGET', KEYS[1], 'epoch')
if cur and ARGV[13] ~= '1' then return {0, tonumber(cur)} end
local epoch = tonumber(ARGV[11])
local counter = tonumber(redis.call('GET', KEYS[5]) or '0')
if counter < epoch then redis.call('SET', KEYS[5], string.format('%d', epoch)) end
redis.call('DEL', KEYS[2], KEYS[3])
local stock = tonumber(ARGV[4])
local buyers, orders, n = {}, {}, 0
local function flush()
  if n > 0 then
    redis.call('HSET', KEYS[2], unpack(buyers))
    redis.call('HSET', KEYS[3], unpack(orders))
  end
  buyers, orders, n = {}, {}, 0
end
for i = 14, #ARGV, 3 do
  local seq, user, qty = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  stock = stock - tonumber(qty)
  buyers[n + 1], buyers[n + 2] = user, seq
  orders[n + 1], orders[n + 2] = seq, user .. '|' .. qty
  n = n + 2
  if n >= 2000 then flush() end
end
flush()
if stock < 0 then stock = 0 end
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'name', ARGV[2], 'price', ARGV[3], 'initial', ARGV[4],
  'stock', string.format('%d', stock), 'start', ARGV[5], 'end', ARGV[6], 'status', ARGV[7],
  'limit', ARGV[8], 'epoch', string.format('%d', epoch), 'cancelled', 0, 'exp', ARGV[9])
redis.call('PEXPIREAT', KEYS[1], ARGV[9])
for i = 2, 4 do
  redis.call('HSET', KEYS[i], '_', '')
  redis.call('PEXPIREAT', KEYS[i], ARGV[9])
end
local seq = tonumber(redis.call('GET', KEYS[7]) or '0')
if seq < tonumber(ARGV[12]) then redis.call('SET', KEYS[7], ARGV[12]) end
pcall(redis.call, 'XGROUP', 'CREATE', KEYS[6], ARGV[10], '0', 'MKSTREAM')
return {3, epoch, stock}
