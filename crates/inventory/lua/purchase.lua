-- Purchase: sells a batch of requests for one product in one atomic step, in order, each with
-- exactly the answer it would get alone; every sale is handed to the outbox in the same step.
-- KEYS[1] activity hash   {status, start, end, limit, stock, epoch, price, ...}
-- KEYS[2] buyers hash     user -> order seq (and the placeholder "_" that carries the expiry)
-- KEYS[3] orders hash     seq -> "user|qty|epoch|state" (state 0 live, 1 cancelled)
-- KEYS[4] order sequence  counter, never reset (order ids stay unique across epochs)
-- KEYS[5] outbox stream   one entry per sale, field v = "seq|user|qty|price|ts|epoch"
-- KEYS[6] idempotency     hash "user:key" -> "seq|remaining|qty"
-- ARGV[1] product id, then three per request: user id, quantity, idempotency key or ""
-- Returns three integers per request, in order: {1, seq, remaining} sold; {2, seq, remaining}
-- replay of an earlier sale with the same key; {-1, 0, 0} unknown product; {-2, stock, 0} sold
-- out; {-3, 0, 0} already bought; {-4, 0, 0} inactive; {-5, 0, 0} not started; {-6, 0, 0}
-- ended; {-7, limit, 0} invalid quantity; {-8, 0, 0} the key was used with another quantity.
-- Expiries are set once, at prewarm: a sale writes no TTL.
local n = (#ARGV - 1) / 3
local out = {}
local function answer(code, a, b)
  out[#out + 1] = code
  out[#out + 1] = a or 0
  out[#out + 1] = b or 0
end
local function all(code)
  for _ = 1, n do answer(code) end
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
local epoch = a[6]
local price = a[7]
local seq0 = tonumber(redis.call('GET', KEYS[4]) or '0')
local seq = seq0
for i = 0, n - 1 do
  local user = ARGV[2 + 3 * i]
  local qty = tonumber(ARGV[3 + 3 * i])
  local key = ARGV[4 + 3 * i]
  local done = false
  if not qty or qty < 1 or qty > limit then
    answer(-7, limit)
    done = true
  end
  if not done and key ~= '' then
    local prev = redis.call('HGET', KEYS[6], user .. ':' .. key)
    if prev then
      local s, r, q = string.match(prev, '^([^|]+)|([^|]+)|?([^|]*)$')
      if q ~= '' and tonumber(q) ~= qty then
        answer(-8)
      else
        answer(2, tonumber(s), tonumber(r))
      end
      done = true
    end
  end
  if not done then
    if stock < qty then
      if redis.call('HEXISTS', KEYS[2], user) == 1 then answer(-3) else answer(-2, stock) end
    elseif redis.call('HSETNX', KEYS[2], user, seq + 1) == 0 then
      answer(-3)
    else
      seq = seq + 1
      stock = stock - qty
      redis.call('HSET', KEYS[3], seq, user .. '|' .. qty .. '|' .. epoch .. '|0')
      redis.call('XADD', KEYS[5], '*', 'v',
        seq .. '|' .. user .. '|' .. qty .. '|' .. price .. '|' .. now .. '|' .. epoch)
      if key ~= '' then
        redis.call('HSET', KEYS[6], user .. ':' .. key, seq .. '|' .. stock .. '|' .. qty)
      end
      answer(1, seq, stock)
    end
  end
end
if seq ~= seq0 then
  redis.call('SET', KEYS[4], seq)
  redis.call('HSET', KEYS[1], 'stock', stock)
end
return out
