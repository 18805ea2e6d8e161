-- Puts a failed webhook job back, due after a delay, with its attempts counted. A job no
-- longer queued (delivered meanwhile by a node whose lease came later) stays gone.
-- KEYS: the queue's due set, the queue's jobs. ARGV: job id, job JSON, delay (ms).
-- Returns 1 if the job was put back, 0 if it was gone.
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
