-- Where a room's log stands: its newest id and its epoch, read together. A room without an
-- epoch (new, or its state was lost) gets one now.
-- KEYS: seq, epoch. ARGV: an epoch to use if the room has none, ttl seconds.
-- Returns {newest id (0 when none), epoch}.
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch, 'EX', ARGV[2])
end
return {tonumber(redis.call('GET', KEYS[1]) or '0'), epoch}
