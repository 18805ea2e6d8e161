-- Pushes a live session's expiry forward; its node calls it on the heartbeat.
-- KEYS: the user's sessions. ARGV: session id, ttl ms. Returns 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
