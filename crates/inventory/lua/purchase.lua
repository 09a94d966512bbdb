-- Purchase: sells a batch of requests for one product in one atomic step, in order, each with
-- exactly the answer it would get alone; the batch's sales go to the outbox in the same step,
-- as one entry.
-- KEYS[1] activity hash   {status, start, end, limit, stock, epoch, price, ...}
-- KEYS[2] buyers hash     user -> order seq (and the placeholder "_" that carries the expiry)
-- KEYS[3] orders hash     seq -> "user|qty" live, "x" prefixed once cancelled (this epoch)
-- KEYS[4] order sequence  counter, never reset (order ids stay unique across epochs); it
--                         starts at a nonce times 10^9 (set by the prewarm), so numbers reach
--                         2^52: they are written with %d, never Lua's 14-digit tostring
-- KEYS[5] outbox stream   one entry per batch: p price, t ms, e epoch, s "seq|user|qty;..."
-- KEYS[6] idempotency     hash "user:key" -> "seq|remaining|qty"
-- KEYS[7] outbox count    sales in the outbox, never reset
-- ARGV[1] product id, then three per request: user id, quantity, idempotency key or ""
-- Returns three integers per request, in order: {1, seq, remaining} sold; {2, seq, remaining}
-- replay of an earlier sale (the same key, or a buyer who holds an order of this quantity —
-- a resent or retried purchase); {-1, 0, 0} unknown product; {-2, stock, 0} sold
-- out; {-3, 0, 0} already bought (an order of another quantity); {-4, 0, 0} inactive; {-5, 0, 0} not started; {-6, 0, 0}
-- ended; {-7, limit, 0} invalid quantity; {-8, 0, 0} the key was used with another quantity.
-- Each hash is read and written once per batch; expiries are set once, at prewarm.
local n = (#ARGV - 1) / 3
local out = {}
local function d(x) return string.format('%d', x) end
local function all(code)
  for i = 1, 3 * n, 3 do out[i], out[i + 1], out[i + 2] = code, 0, 0 end
  return out
end
local a = redis.call('HMGET', KEYS[1], 'status', 'start', 'end', 'limit', 'stock', 'epoch', 'price')
if not a[1] then return all(-1) end
if a[1] ~= 'active' then return all(-4) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(a[2]) then return all(-5) end
if now >= tonumber(a[3]) then return all(-6) end
local limit = tonumber(a[4])
local stock = tonumber(a[5])
local users = {}
for i = 1, n do users[i] = ARGV[3 * i - 1] end
local held = redis.call('HMGET', KEYS[2], unpack(users))
local heldq = {}
local hs = {}
for i = 1, n do if held[i] then hs[#hs + 1] = held[i] end end
if #hs > 0 then
  local os = redis.call('HMGET', KEYS[3], unpack(hs))
  for i = 1, #hs do
    if os[i] and string.sub(os[i], 1, 1) ~= 'x' then
      heldq[hs[i]] = tonumber(string.match(os[i], '^[^|]+|([^|]+)'))
    end
  end
end
local seq = tonumber(redis.call('GET', KEYS[4]) or '0')
local bought = {}
local buyers, orders, sales = {}, {}, {}
local nb, ns = 0, 0
for i = 1, n do
  local user = users[i]
  local qty = tonumber(ARGV[3 * i])
  local key = ARGV[3 * i + 1]
  local prev = false
  if key ~= '' then prev = redis.call('HGET', KEYS[6], user .. ':' .. key) end
  local j = 3 * i - 2
  if not qty or qty < 1 or qty > limit then
    out[j], out[j + 1], out[j + 2] = -7, limit, 0
  elseif prev then
    local s, r, q = string.match(prev, '^([^|]+)|([^|]+)|?([^|]*)$')
    if q ~= '' and tonumber(q) ~= qty then
      out[j], out[j + 1], out[j + 2] = -8, 0, 0
    else
      out[j], out[j + 1], out[j + 2] = 2, tonumber(s), tonumber(r)
    end
  elseif held[i] and heldq[held[i]] == qty then
    out[j], out[j + 1], out[j + 2] = 2, tonumber(held[i]), stock
  elseif bought[user] and bought[user][2] == qty then
    out[j], out[j + 1], out[j + 2] = 2, bought[user][1], stock
  elseif held[i] or bought[user] then
    out[j], out[j + 1], out[j + 2] = -3, 0, 0
  elseif stock < qty then
    out[j], out[j + 1], out[j + 2] = -2, stock, 0
  else
    seq = seq + 1
    stock = stock - qty
    bought[user] = {seq, qty}
    local o = user .. '|' .. qty
    local s = d(seq)
    buyers[nb + 1], buyers[nb + 2] = user, s
    orders[nb + 1], orders[nb + 2] = s, o
    nb = nb + 2
    ns = ns + 1
    sales[ns] = s .. '|' .. o
    if key ~= '' then
      redis.call('HSET', KEYS[6], user .. ':' .. key, s .. '|' .. d(stock) .. '|' .. qty)
    end
    out[j], out[j + 1], out[j + 2] = 1, seq, stock
  end
end
if ns > 0 then
  redis.call('HSET', KEYS[2], unpack(buyers))
  redis.call('HSET', KEYS[3], unpack(orders))
  redis.call('XADD', KEYS[5], '*', 'p', a[7], 't', now, 'e', a[6], 's', table.concat(sales, ';'))
  redis.call('INCRBY', KEYS[7], ns)
  redis.call('SET', KEYS[4], d(seq))
  redis.call('HSET', KEYS[1], 'stock', d(stock))
end
return out
