-- Appends one message to a room's log: assigns the next id, stores the frame in the capped
-- stream and publishes it on the room's live channel, atomically, so every node sees the same
-- ids in the same order. A send carrying a client id is appended once: a retry (after an
-- unconfirmed send) gets the first id back and appends nothing.
-- KEYS: seq, log, closed, sent, epoch (one room's keys: one hash tag, one slot).
-- ARGV: frame prefix, frame tail, history length, live channel, ttl seconds,
--       floor (the newest id the calling node has delivered),
--       dedup key (`<user>\n<client_id>`, or '' for none), an epoch to use if the room has none.
-- Returns {id, duplicate (0|1), epoch}; id -1 when the room was closed.
if redis.call('EXISTS', KEYS[3]) == 1 then return {-1, 0, ''} end
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  -- The room's state is new, or was lost: a new epoch tells resuming clients so.
  epoch = ARGV[8]
  redis.call('SET', KEYS[5], epoch)
end
redis.call('EXPIRE', KEYS[5], ARGV[5])
if ARGV[7] ~= '' then
  local first = redis.call('ZSCORE', KEYS[4], ARGV[7])
  if first then return {tonumber(first), 1, epoch} end
end
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
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[4], id, ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', id - tonumber(ARGV[3]))
  redis.call('EXPIRE', KEYS[4], ARGV[5])
end
return {id, 0, epoch}
