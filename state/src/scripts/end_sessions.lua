-- Ends one of a user's sessions, or all of them: frees their slots and records them as
-- released, so neither a late claim nor their node's next refresh brings them back.
-- KEYS: the user's sessions, the user's released sessions. ARGV: how long to remember the release (ms), a session id ('' for
-- all). Returns how many slots were freed.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ended = {}
if ARGV[2] == '' then
  ended = redis.call('ZRANGE', KEYS[1], 0, -1)
else
  ended = {ARGV[2]}
end
for _, session in ipairs(ended) do
  redis.call('ZREM', KEYS[1], session)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[1]), session)
end
if #ended > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return #ended
