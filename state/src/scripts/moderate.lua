-- Records a moderator's action on a member and publishes its `moderation` frame to the room's
-- nodes, atomically, unless the room was closed (nothing of a closed room comes back).
-- KEYS: muted, removed, closed, meta.
-- ARGV: action (muted | unmuted | removed), user, until ms (muted) or reason (removed),
--       ttl seconds, live channel, frame, the publish command, incarnation ('' for the room as
--       it is now).
-- Returns 1, or -1 for a closed room.
if is_closed(KEYS[3], KEYS[4], ARGV[8]) then return -1 end
local action, user = ARGV[1], ARGV[2]
if action == 'muted' then
  redis.call('HSET', KEYS[1], user, ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
elseif action == 'unmuted' then
  redis.call('HDEL', KEYS[1], user)
else
  redis.call('HDEL', KEYS[1], user)
  redis.call('HSET', KEYS[2], user, ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
redis.call(ARGV[7], ARGV[5], ARGV[6])
return 1
