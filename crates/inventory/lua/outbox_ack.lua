-- Outbox ack: delivered entries leave the consumer group's pending list, and the stream is
-- trimmed by range (XTRIM MINID) up to the oldest entry still pending, instead of deleting
-- entry by entry.
-- KEYS[1] outbox stream
-- ARGV[1] group, ARGV[2..] entry ids
-- Returns the number of entries acknowledged.
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return 0 end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
local function parse(id)
  local ms, sq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(sq)
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
local floor
if tonumber(pending[1]) > 0 then
  floor = pending[2]
else
  -- Nothing pending: everything up to the newest acknowledged entry is done.
  local bm, bs = -1, -1
  for _, id in ipairs(ids) do
    local m, s = parse(id)
    if m and (m > bm or (m == bm and s > bs)) then bm, bs = m, s end
  end
  if bm < 0 then return acked end
  floor = bm .. '-' .. (bs + 1)
end
redis.call('XTRIM', KEYS[1], 'MINID', floor)
return acked
