-- Records a room's settings and incarnation unless that incarnation (or, with none, the room)
-- was closed; an existing room keeps the ones it has. A new incarnation of a closed name (a
-- ChatRoom applied again) opens: its closed predecessors stay closed.
-- A room already live without settings (joined before it was created: its nodes record it
-- under no incarnation) keeps none, so its record stays in one place.
-- KEYS: meta, closed, epoch. ARGV: max_members, created_ms, ttl seconds, incarnation ('' for
--       none).
-- Returns {max_members, created_ms, incarnation} as the room has them, or {-1, 0, ''} when
-- closed.
if redis.call('TYPE', KEYS[2]).ok == 'string' then
  -- A mark from before incarnations closed the room without one: kept, as a hash.
  local t = redis.call('TIME')
  local ttl = redis.call('TTL', KEYS[2])
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[2], '', tonumber(t[1]) * 1000)
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
local inc = ARGV[4]
if is_closed(KEYS[2], KEYS[1], inc) then return {-1, 0, ''} end
if inc ~= '' and redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  inc = ''
end
redis.call('HSETNX', KEYS[1], 'max_members', ARGV[1])
redis.call('HSETNX', KEYS[1], 'created_ms', ARGV[2])
if inc ~= '' then redis.call('HSETNX', KEYS[1], 'incarnation', inc) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
local got = redis.call('HMGET', KEYS[1], 'max_members', 'created_ms', 'incarnation')
return {tonumber(got[1]), tonumber(got[2]), got[3] or ''}
