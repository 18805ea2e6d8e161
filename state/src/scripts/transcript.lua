-- Records joins and leaves (JSON transcript entries) in one incarnation's transcript, in
-- order. Nodes record an entry only while they do not know the room closed, so entries that
-- reach a closed incarnation happened before its close (a node writes them a tick late): they
-- are kept, and the transcript puts them before the close, which stays its last entry. Their
-- write leaves the retention the close set alone, and a transcript whose retention ran out
-- stays gone.
-- KEYS: the incarnation's transcript, closed, meta. ARGV: the transcript's bound in entries,
--       the room's ttl seconds, incarnation ('' for none), then the entries.
-- Returns the entries recorded.
local closed = is_closed(KEYS[2], KEYS[3], ARGV[3])
if closed and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 4, #ARGV do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'f', ARGV[i])
end
-- While the room is open its transcript lives as long as its state.
if not closed then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return #ARGV - 3
