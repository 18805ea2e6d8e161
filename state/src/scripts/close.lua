-- Closes one incarnation of a room for good, once: its closed mark (kept as long as a token
-- could name it), the close as its transcript's last entry and the transcript's retention,
-- atomically; and, when it is the room's current incarnation, the room's state dropped and a
-- `closed` frame on the room's live channel. A second close of it (a retried DELETE, a
-- finalizer run again) changes nothing: the retention is set once.
-- KEYS: closed, the incarnation's transcript, meta, then the room's state keys.
-- ARGV: closed-mark ttl seconds, transcript entry ('' for none), retention seconds,
--       live channel, closed frame, the publish command, incarnation ('' for none).
-- Returns 1 when this call closed it, 0 when it was closed already.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local inc = ARGV[7]
if redis.call('TYPE', KEYS[1]).ok == 'string' then
  -- A mark from before incarnations: the room without one was closed then.
  if inc == '' then return 0 end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], '', now)
end
if redis.call('HSETNX', KEYS[1], inc, now) == 0 then return 0 end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'f', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
-- The room's state is this incarnation's unless a later one opened (a room created before
-- incarnations, or not created at all, names none: it is this one).
local current = redis.call('HGET', KEYS[3], 'incarnation') or ''
if current == '' or current == inc then
  for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
  redis.call(ARGV[6], ARGV[4], ARGV[5])
end
return 1
