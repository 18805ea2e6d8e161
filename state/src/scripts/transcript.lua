-- Records joins and leaves (JSON transcript entries) in a room's transcript, in order, unless
-- the room was closed: the close is the transcript's last entry and set its retention, so
-- nothing is appended after it and its TTL is left alone.
-- KEYS: transcript, closed. ARGV: the transcript's bound in entries, the room's ttl seconds,
--       then the entries.
-- Returns the entries recorded (0 for a closed room).
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'f', ARGV[i])
end
-- While the room is open its transcript lives as long as its state.
redis.call('EXPIRE', KEYS[1], ARGV[2])
return #ARGV - 2
