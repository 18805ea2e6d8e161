-- Whether a room (or one incarnation of it) is closed.
-- KEYS: closed, meta. ARGV: incarnation ('' for the room as it is now).
-- Returns 1 or 0.
if is_closed(KEYS[1], KEYS[2], ARGV[1]) then return 1 end
return 0
