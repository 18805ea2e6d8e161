-- Pushes the expiry of one set's slots held by one node forward; the node calls it on the
-- heartbeat. A slot that was ended (released) stays gone: the node then ends that session.
-- A slot that is missing or expired without being released (its node could not refresh it
-- while Redis stalled, someone freed it believing its node gone, or Redis lost its data) is
-- taken back if the set still has room: only a set that filled up meanwhile ends a session.
-- KEYS: the set's live slots, its released slots. ARGV: ttl ms, most slots, session ids...
-- Returns the ids whose slot is gone for good.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local gone = {}
local missing = {}
-- Held slots first, so the ones taken back count them.
for i = 3, #ARGV do
  local session = ARGV[i]
  if redis.call('ZSCORE', KEYS[2], session) then
    redis.call('ZREM', KEYS[1], session)
    table.insert(gone, session)
  elseif redis.call('ZSCORE', KEYS[1], session) then
    redis.call('ZADD', KEYS[1], now + ttl, session)
  else
    table.insert(missing, session)
  end
end
for _, session in ipairs(missing) do
  if redis.call('ZCARD', KEYS[1]) < max then
    redis.call('ZADD', KEYS[1], now + ttl, session)
  else
    table.insert(gone, session)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return gone
