-- Pushes the expiry of one user's sessions on one node forward; the node calls it on the
-- heartbeat. A slot that was ended (released), or that expired while its node was frozen,
-- stays gone: the node then ends that session. But when the user's whole set is missing and
-- none of these was released, Redis lost its data (a restart without persistence, a
-- failover): the slots are taken again rather than every session ended.
-- KEYS: the user's sessions, the user's released sessions. ARGV: ttl ms, session ids...
-- Returns the ids whose slot is gone.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lost = redis.call('EXISTS', KEYS[1]) == 0
local gone = {}
for i = 2, #ARGV do
  local session = ARGV[i]
  local expiry = redis.call('ZSCORE', KEYS[1], session)
  local released = redis.call('ZSCORE', KEYS[2], session)
  if released or (not expiry and not lost) or (expiry and tonumber(expiry) <= now) then
    redis.call('ZREM', KEYS[1], session)
    table.insert(gone, session)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), session)
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return gone
