-- guard: KEYS trip reset
--        ARGV until count reset_ms
-- The top-up guard shared by the instances of a fleet (both keys carry the
-- hash tag {account}: one Redis Cluster slot). reset_ms is the latest reset
-- this instance knows of: a newer one than Redis holds is stored and clears
-- the trip. until (unix ms, 0 = none) and count are this instance's own
-- trip: stored when it outlasts the one held and the instance knows the
-- latest reset (a trip counted before a reset it has not seen yet is
-- ignored). The trip expires by itself at its until. Returns {until, count,
-- reset} as Redis holds them now (0 when there is no trip).
local reset = tonumber(redis.call('GET', KEYS[2]) or '0')
local mine = tonumber(ARGV[3])
if mine > reset then
  redis.call('SET', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[1])
  reset = mine
end
local u = tonumber(ARGV[1])
if mine >= reset and u > now_ms() then
  local cur = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
  if u > cur then
    redis.call('HSET', KEYS[1], 'until', ARGV[1], 'count', ARGV[2])
    redis.call('PEXPIREAT', KEYS[1], ARGV[1])
  end
end
local cu = redis.call('HGET', KEYS[1], 'until') or '0'
local cc = redis.call('HGET', KEYS[1], 'count') or '0'
return {cu, cc, string.format('%d', reset)}
