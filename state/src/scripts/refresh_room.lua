-- Extends the life of a room a node hosts: its state keys and, while the room is open, its
-- transcript (a closed room's transcript keeps the retention its close set).
-- KEYS: closed, transcript, then the room's state keys. ARGV: ttl seconds.
for i = 3, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return 0
