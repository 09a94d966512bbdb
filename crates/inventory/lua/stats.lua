-- Stats: one product's counters in one round trip.
-- KEYS[1] activity hash, KEYS[2] buyers hash, KEYS[3] outbox count (sales in the outbox)
-- Returns {} for an unknown product, else {epoch, initial, stock, cancelled, buyers, outbox}
-- (the buyers hash holds a placeholder field besides the buyers).
local a = redis.call('HMGET', KEYS[1], 'epoch', 'initial', 'stock', 'cancelled')
if not a[1] then return {} end
return {tonumber(a[1]), tonumber(a[2]), tonumber(a[3]), tonumber(a[4]),
  math.max(redis.call('HLEN', KEYS[2]) - redis.call('HEXISTS', KEYS[2], '_'), 0),
  tonumber(redis.call('GET', KEYS[3]) or '0')}
