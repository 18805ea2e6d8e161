-- Claims one of a user's fleet-wide session slots. Drops expired slots first, then adds this
-- session if the user holds fewer than the limit. Redis's clock decides expiry, so nodes with
-- skewed clocks agree.
-- KEYS: the user's sessions (a sorted set: session id -> expiry in ms), the user's released
--       sessions (session id -> when the record may go). Both carry the hash tag {user}.
-- ARGV: session id, most sessions, ttl ms.
-- Returns 1 when claimed (or already held), 0 when the user is at the limit, -1 when this
-- session was already released: its join gave up before this claim arrived (Redis stalled),
-- so it must not take a slot now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return -1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
