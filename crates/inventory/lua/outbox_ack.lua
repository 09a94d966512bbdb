-- Outbox ack: delivered entries leave the consumer group's pending list and the stream.
-- KEYS[1] outbox stream
-- ARGV[1] group, ARGV[2..] entry ids
-- Returns the number of entries removed.
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
if #ids == 0 then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
return redis.call('XDEL', KEYS[1], unpack(ids))
