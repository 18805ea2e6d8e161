-- Queues webhook jobs, each due at once. A job already queued (the same event reported
-- again: a retried write, a retried reconcile) is left as it is, attempts and all.
-- KEYS: the queue's due set, the queue's jobs. ARGV: job id, job JSON, job id, job JSON, ...
-- Returns how many jobs were new.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('ZADD', KEYS[1], now, ARGV[i])
    added = added + 1
  end
end
return added
