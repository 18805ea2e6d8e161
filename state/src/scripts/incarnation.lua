-- The incarnation a room name stands for now: the open room's (its `meta`), or else the one
-- closed last; '' for a room without one.
-- KEYS: meta, closed. Returns the incarnation.
local current = redis.call('HGET', KEYS[1], 'incarnation')
if current then return current end
if redis.call('TYPE', KEYS[2]).ok ~= 'hash' then return '' end
local all = redis.call('HGETALL', KEYS[2])
local last, at = '', -1
for i = 1, #all, 2 do
  local when = tonumber(all[i + 1])
  if when > at then last, at = all[i], when end
end
return last
