-- Frees the slots of processes that are gone (their node no longer reports, or reports
-- another boot), so their members get back in at once rather than after the slots' TTL.
-- Not released: should such a process still live (its reports could not reach Redis), its
-- refresh takes its slots back while the set has room.
-- KEYS: the set's live slots (sorted set: session id -> expiry ms).
-- ARGV: the gone processes' session id prefixes (`node/boot/`).
-- Returns how many slots were freed.
local freed = 0
for _, session in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  for i = 1, #ARGV do
    if string.sub(session, 1, #ARGV[i]) == ARGV[i] then
      redis.call('ZREM', KEYS[1], session)
      freed = freed + 1
      break
    end
  end
end
return freed
