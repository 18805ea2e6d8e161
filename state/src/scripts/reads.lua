-- Records members' read positions in a room and tells every node hosting it, atomically.
-- A read never moves back: each user's position becomes the larger of the stored one and
-- the new one. The frame is published as given; receivers apply it as a maximum too.
-- Nothing is recorded for a closed room (its keys must not come back).
-- KEYS: reads (hash user -> id), closed, meta (one room's keys)
-- ARGV: ttl seconds, live channel, frame, the publish command (PUBLISH, or SPUBLISH on a
--       Redis Cluster), incarnation ('' for none), then pairs of user, id.
-- Returns how many positions moved.
if is_closed(KEYS[2], KEYS[3], ARGV[5]) then return 0 end
local moved = 0
for i = 6, #ARGV, 2 do
  local id = tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if id > old then
    redis.call('HSET', KEYS[1], ARGV[i], id)
    moved = moved + 1
  end
end
if moved > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  redis.call(ARGV[4], ARGV[2], ARGV[3])
end
return moved
