-- Claims the due webhook jobs for one deliverer. Each is leased: its due time moves past the
-- lease, so no other node takes it while this one tries, and it comes due again by itself if
-- this node dies before it answers.
-- KEYS: the queue's due set, the queue's jobs. ARGV: most jobs to claim, lease (ms).
-- Returns the claimed jobs' JSON. Ids whose job is gone are dropped from the due set.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local claimed = {}
for _, id in ipairs(ids) do
  local job = redis.call('HGET', KEYS[2], id)
  if job then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    claimed[#claimed + 1] = job
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return claimed
