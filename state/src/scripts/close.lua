-- Closes a room for good, once: the closed mark (kept as long as a token could name the room),
-- the room's state dropped, the close as the transcript's last entry, the transcript's
-- retention set, and a `closed` frame on the room's live channel, atomically. A second close
-- (a retried DELETE, a finalizer run again) changes nothing: the retention is set once.
-- KEYS: closed, transcript, then the room's state keys.
-- ARGV: closed-mark ttl seconds, transcript entry ('' for none), retention seconds,
--       live channel, closed frame, the publish command.
-- Returns 1 when this call closed the room, 0 when it was closed already.
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) == false then return 0 end
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
if ARGV[2] ~= '' then
  redis.call('XADD', KEYS[2], '*', 'f', ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call(ARGV[6], ARGV[4], ARGV[5])
return 1
