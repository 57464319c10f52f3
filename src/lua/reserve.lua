-- reserve: KEYS spent loaned holds lease
--          ARGV rid amount cap(-1 = none) lease_ms expat instance
-- Reaps expired holds, then admits amount if spent + loaned + amount <= cap
-- and adds the hold (with the instance holding it) and its lease, or
-- refuses; one step.
-- Returns {1|0, spent, loaned} (strings, after the step).
local spent_k, loaned_k, holds_k, lease_k = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rid, amount, cap, lease_ms, expat, inst = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now = now_ms()
reap(holds_k, lease_k, loaned_k, now)
local spent, loaned = get0(spent_k), get0(loaned_k)
if redis.call('HEXISTS', holds_k, rid) == 1 then
  return {1, spent, loaned}              -- a retried reserve: already held
end
if cap ~= "-1" and not fits(spent, loaned, amount, cap) then
  return {0, spent, loaned}
end
redis.call('INCRBY', loaned_k, amount)
redis.call('HSET', holds_k, rid, amount .. "@" .. inst)
redis.call('ZADD', lease_k, now + tonumber(lease_ms), rid)
if redis.call('EXISTS', spent_k) == 0 then redis.call('SET', spent_k, "0") end
expire_at(expat, spent_k, loaned_k, holds_k, lease_k)
return {1, spent, get0(loaned_k)}
