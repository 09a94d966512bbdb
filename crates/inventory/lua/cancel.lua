-- Cancel: returns an order's items to stock and frees its buyer, once.
-- KEYS[1] activity hash, KEYS[2] buyers hash, KEYS[3] orders hash
-- ARGV[1] order seq
-- Orders are "user|qty" while live and "x" followed by that once cancelled (an earlier
-- release wrote "user|qty|epoch|state", state 1 cancelled).
-- Returns {1, qty, remaining} cancelled; {2} already cancelled; {0} not found in this epoch.
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local e = redis.call('HGET', KEYS[3], ARGV[1])
if not e then return {0} end
if string.sub(e, 1, 1) == 'x' then return {2} end
local user, qty, rest = string.match(e, '^([^|]+)|([^|]+)(.*)$')
if not user then return {0} end
if rest ~= '' and string.sub(rest, -2) == '|1' then return {2} end
redis.call('HSET', KEYS[3], ARGV[1], 'x' .. user .. '|' .. qty)
if redis.call('HGET', KEYS[2], user) == ARGV[1] then redis.call('HDEL', KEYS[2], user) end
local remaining = redis.call('HINCRBY', KEYS[1], 'stock', tonumber(qty))
redis.call('HINCRBY', KEYS[1], 'cancelled', 1)
return {1, tonumber(qty), remaining}
