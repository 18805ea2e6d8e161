-- Extends the life of a room a node hosts: its state keys and, while it is open, its
-- incarnation's transcript (a closed one keeps the retention its close set).
-- KEYS: closed, meta, the incarnation's transcript, then the room's state keys.
-- ARGV: ttl seconds, incarnation ('' for none).
if is_closed(KEYS[1], KEYS[2], ARGV[2]) then return 0 end
for i = 4, #KEYS do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
redis.call('EXPIRE', KEYS[3], ARGV[1])
return 1
