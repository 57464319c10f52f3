-- beat: KEYS instances
--       ARGV instance stale_ms
-- Records that this instance is alive and returns how many instances were
-- alive within stale_ms (the divisor of the local share when Redis is down).
local k = KEYS[1]
local now = now_ms()
redis.call('ZADD', k, now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', k, '-inf', now - tonumber(ARGV[2]))
return redis.call('ZCARD', k)
