-- renew: KEYS lease
--        ARGV lease_ms rid...
-- Pushes the lease of each live hold forward. A hold already reaped is not
-- brought back (its settle still charges exactly once).
-- Returns the number of leases renewed.
local lease_k = KEYS[1]
local exp = now_ms() + tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', lease_k, 'XX', 'CH', exp, ARGV[i])
end
return n
