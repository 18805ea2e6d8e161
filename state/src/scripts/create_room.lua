-- Records a room's settings unless the room was closed; an existing room keeps the ones it has.
-- KEYS: meta, closed. ARGV: max_members, created_ms, ttl seconds.
-- Returns {max_members, created_ms} as the room has them, or {-1, 0} for a closed room.
if redis.call('EXISTS', KEYS[2]) == 1 then return {-1, 0} end
redis.call('HSETNX', KEYS[1], 'max_members', ARGV[1])
redis.call('HSETNX', KEYS[1], 'created_ms', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local got = redis.call('HMGET', KEYS[1], 'max_members', 'created_ms')
return {tonumber(got[1]), tonumber(got[2])}
