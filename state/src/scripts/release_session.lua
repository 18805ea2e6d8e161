-- Frees a session's slot at once and remembers, for as long as a slot lives, that it was
-- released, so a claim for it that reaches Redis late (after a stall) cannot take it again.
-- KEYS: the user's sessions, the user's released sessions. ARGV: session id, how long to remember the release (ms).
-- Returns 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
