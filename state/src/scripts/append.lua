-- Appends one message to a room's log: assigns the next id, stores the frame in the capped
-- stream and publishes it on the room's live channel, atomically, so every node sees the same
-- ids in the same order.
-- KEYS: seq, log, closed (one room's keys: one hash tag, one slot).
-- ARGV: frame prefix, frame tail, history length, live channel, ttl seconds,
--       floor (the newest id the calling node has delivered).
-- Returns the id, or -1 when the room was closed.
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local id = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[6])
if id == 1 then
  -- The counter was lost (evicted) while the log survived: continue after the log.
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last > 0 then
    floor = math.max(floor, tonumber(string.match(last[1][1], '^(%d+)')))
  end
end
if id <= floor then
  -- Redis lost the room's state (restart, eviction): ids never go backwards.
  id = floor + 1
  redis.call('SET', KEYS[1], id)
end
local frame = ARGV[1] .. id .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0', 'f', frame)
redis.call('PUBLISH', ARGV[4], frame)
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return id
