-- Outbox ack: delivered entries leave the consumer group's pending list and the outbox count,
-- and the stream is trimmed by range (XTRIM MINID) up to the oldest entry still pending,
-- instead of deleting entry by entry.
-- KEYS[1] outbox stream, KEYS[2] outbox count (sales in the outbox)
-- ARGV[1] group, then pairs: entry id, sales in that entry
-- Returns the number of sales acknowledged (an entry acknowledged before counts nothing).
if #ARGV < 3 then return 0 end
local function parse(id)
  local ms, sq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(sq)
end
local done, bm, bs = 0, -1, -1
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then done = done + tonumber(ARGV[i + 1]) end
  local m, s = parse(id)
  if m and (m > bm or (m == bm and s > bs)) then bm, bs = m, s end
end
if done > 0 then redis.call('DECRBY', KEYS[2], done) end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
local floor
if tonumber(pending[1]) > 0 then
  floor = pending[2]
elseif bm >= 0 then
  -- Nothing pending: everything up to the newest acknowledged entry is done.
  floor = bm .. '-' .. (bs + 1)
end
if floor then redis.call('XTRIM', KEYS[1], 'MINID', floor) end
return done
