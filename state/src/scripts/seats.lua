-- Reads, and optionally reserves, the free seats of one node for a room. A node's free seats
-- are its user limit, minus its users, minus the seats still reserved for other rooms placed
-- on it (a reservation shrinks as the room's members arrive there). Reading and reserving in
-- one script means two operators can never both take a node's last seats.
-- KEYS: the node's report, its rooms, its reservations (one node's keys: one hash tag).
-- ARGV: mode (peek | reserve | force), room, seats.
-- Returns {outcome, free seats not counting this room's own reservation, message rate}; the
-- rate travels as a string because Redis truncates Lua numbers to integers.
local report = redis.call('GET', KEYS[1])
if not report then return {'gone', 0, '0'} end
local r = cjson.decode(report)
local present = {}
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do present[flat[i]] = cjson.decode(flat[i + 1]).members end
local held = 0
flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do
  if flat[i] ~= ARGV[2] then
    local left = tonumber(flat[i + 1]) - (present[flat[i]] or 0)
    if left > 0 then held = held + left end
  end
end
local free = r.limits.max_node_users - r.users - held
local rate = tostring(r.msg_rate)
if r.draining then return {'draining', free, rate} end
if ARGV[1] == 'peek' then return {'ok', free, rate} end
if ARGV[1] == 'reserve' and free < tonumber(ARGV[3]) then return {'full', free, rate} end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
return {'reserved', free, rate}
