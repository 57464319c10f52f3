-- settle: KEYS spent loaned holds lease by done
--         ARGV rid charge instance expat done_ttl_s
-- Ends a hold with its charge: the hold (if its lease has not been reaped)
-- leaves loaned, the charge goes into spent and into this instance's share.
-- Idempotent by request id: the done key makes a retry a no-op, and a hold
-- that already expired is still charged exactly once.
-- Returns {1 applied | 0 already settled}.
local spent_k, loaned_k, holds_k, lease_k, by_k, done_k =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local rid, charge, inst, expat, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', done_k) == 1 then return {0} end
drop_hold(holds_k, lease_k, loaned_k, rid)
redis.call('INCRBY', spent_k, charge)
redis.call('HINCRBY', by_k, inst, charge)
redis.call('SET', done_k, "1", 'EX', ttl)
expire_at(expat, spent_k, loaned_k, holds_k, lease_k, by_k)
return {1}
