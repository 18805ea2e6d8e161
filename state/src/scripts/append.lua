-- Appends one message to a room's log: assigns the next id, stores the frame in the capped
-- stream and publishes it on the room's live channel, atomically, so every node sees the same
-- ids in the same order. A send carrying a client id is appended once: a retry (after an
-- unconfirmed send) gets the first id back and appends nothing.
-- KEYS: seq, log, closed, sent, epoch, the incarnation's transcript, meta (one room's keys:
--       one hash tag, one slot).
-- ARGV: frame prefix, frame tail, history length, live channel, ttl seconds,
--       floor (the newest id the calling node has delivered),
--       dedup key (`<user>\n<client_id>`, or '' for none), an epoch to use if the room has none,
--       the publish command (PUBLISH, or SPUBLISH on a Redis Cluster: the live channel shares
--       the room's hash tag, so it is in the script's slot),
--       the transcript's bound in entries (0: the fleet keeps no transcripts),
--       the room's incarnation ('' for none).
-- Returns {id, duplicate (0|1), epoch, renewed (1 when this call began the epoch)}; id -1 when
-- the room (that incarnation of it) was closed.
-- Every redis.call costs a few microseconds here, so a message pays only for what it needs:
-- the room's keys get their TTL back only once it has run down by a tenth (at most a minute),
-- and the dedup set is trimmed every 64 ids rather than on every send.
if is_closed(KEYS[3], KEYS[7], ARGV[11]) then return {-1, 0, '', 0} end
local ttl = tonumber(ARGV[5])
local epoch = redis.call('GET', KEYS[5])
local renewed = 0
if not epoch then
  -- The room's state is new, or was lost: a new epoch tells resuming clients so.
  epoch = ARGV[8]
  redis.call('SET', KEYS[5], epoch, 'EX', ttl)
  renewed = 1
end
if ARGV[7] ~= '' then
  local first = redis.call('ZSCORE', KEYS[4], ARGV[7])
  if first then return {tonumber(first), 1, epoch, renewed} end
end
local id = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[6])
local known = id - 1
if id == 1 then
  -- The counter was lost (evicted) while the log survived: continue after the log.
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if #last > 0 then
    known = tonumber(string.match(last[1][1], '^(%d+)'))
  end
end
if floor > known then
  -- Redis lost messages the node delivered (a restart, or a failover to a replica that was
  -- behind): ids never go backwards, and the history has a gap, so a new epoch.
  id = floor + 1
  redis.call('SET', KEYS[1], id)
  if renewed == 0 then
    epoch = ARGV[8]
    redis.call('SET', KEYS[5], epoch, 'EX', ttl)
    renewed = 1
  end
elseif id <= known then
  id = known + 1
  redis.call('SET', KEYS[1], id)
end
local frame = ARGV[1] .. id .. ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0', 'f', frame)
redis.call(ARGV[9], ARGV[4], frame)
local transcript_len = tonumber(ARGV[10])
if transcript_len > 0 then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', transcript_len, '*', 'f', frame)
end
-- The counter's TTL stands for the room's: -1 when INCR just made it.
if redis.call('TTL', KEYS[1]) < ttl - math.min(60, math.floor(ttl / 10)) then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[5], ttl)
  if transcript_len > 0 then redis.call('EXPIRE', KEYS[6], ttl) end
end
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[4], id, ARGV[7])
  if id % 64 == 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', id - tonumber(ARGV[3]))
  end
  -- Every time: the set may be new while the counter's TTL is still fresh.
  redis.call('EXPIRE', KEYS[4], ttl)
end
return {id, 0, epoch, renewed}
