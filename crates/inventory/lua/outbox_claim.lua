-- Outbox claim: entries another relay claimed but did not acknowledge within min-idle, then new
-- entries, up to count, for this consumer.
-- KEYS[1] outbox stream
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count, ARGV[4] min idle ms
-- Returns a flat array {id1, fields1, id2, fields2, ...} where fields is {k1, v1, k2, v2, ...}.
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local out = {}
local n = tonumber(ARGV[3])
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4], '0-0', 'COUNT', n)
for _, e in ipairs(claimed[2]) do
  if e[2] then
    table.insert(out, e[1])
    table.insert(out, e[2])
  end
end
local left = n - #out / 2
if left > 0 then
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left, 'STREAMS', KEYS[1], '>')
  if r and r[1] then
    for _, e in ipairs(r[1][2]) do
      table.insert(out, e[1])
      table.insert(out, e[2])
    end
  end
end
return out
