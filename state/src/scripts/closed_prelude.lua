-- Prepended to every script that writes a room's keys (see `scripts.rs`), so each checks the
-- closed mark in the same atomic step as its write.

-- Whether the closed mark `closed` (hash incarnation -> close ms) holds `field`. A mark written
-- before incarnations is a plain string: it closed the room without one, and holds them all.
local function closed_has(closed, field)
  local ok, found = pcall(redis.call, 'HEXISTS', closed, field)
  if ok then return found == 1 end
  return redis.call('EXISTS', closed) == 1
end

-- Whether incarnation `inc` of a room is closed. With no incarnation named (''), the room as
-- it is now: closed when the name's last incarnation was, unless a later one opened (`meta`
-- names an incarnation that is not closed).
local function is_closed(closed, meta, inc)
  if inc ~= '' then return closed_has(closed, inc) end
  if redis.call('EXISTS', closed) == 0 then return false end
  local current = redis.call('HGET', meta, 'incarnation')
  if not current then return true end
  return closed_has(closed, current)
end
