-- view: KEYS spent loaned holds lease by
--       ARGV (none)
-- The fleet's figures for the period after reaping expired holds.
-- Returns {spent, loaned, instances with a share}.
local spent_k, loaned_k, holds_k, lease_k, by_k = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
reap(holds_k, lease_k, loaned_k, now_ms())
return {get0(spent_k), get0(loaned_k), redis.call('HLEN', by_k)}
