-- Where a room's log stands: its newest id and its epoch, read together. A room without an
-- epoch (new, or its state was lost) gets one now. When the log is behind what the calling
-- node delivered, Redis lost messages (a restart, or a failover to a replica that was
-- behind): the log moves up to the node's newest id, so ids never go backwards, and begins a
-- new epoch, so resuming clients learn their history has a gap.
-- A closed room is only reported closed: none of its keys is made again.
-- KEYS: seq, epoch, log, closed, meta. ARGV: an epoch to use if the room has none, ttl
--       seconds, floor (the newest id the calling node has delivered; 0 for none),
--       incarnation ('' for none).
-- Returns {newest id (0 when none), epoch, closed (0|1)}.
if is_closed(KEYS[4], KEYS[5], ARGV[4]) then return {0, '', 1} end
local epoch = redis.call('GET', KEYS[2])
local renewed = false
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch, 'EX', ARGV[2])
  renewed = true
end
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[3])
if seq < floor then
  local known = seq
  if seq == 0 then
    -- The counter was lost (evicted) while the log survived: the log says where it stands.
    local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
    if #last > 0 then known = tonumber(string.match(last[1][1], '^(%d+)')) end
  end
  if known < floor then
    if not renewed then
      epoch = ARGV[1]
      redis.call('SET', KEYS[2], epoch, 'EX', ARGV[2])
    end
    known = floor
  end
  redis.call('SET', KEYS[1], known, 'EX', ARGV[2])
  seq = known
end
return {seq, epoch, 0}
