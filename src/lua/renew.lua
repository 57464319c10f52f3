-- renew: KEYS lease limlease lim
--        ARGV lease_ms rid...
-- Pushes the lease of each live hold forward (its period hold and its
-- rate-limit record). A hold already reaped is not brought back (its settle
-- still charges exactly once). Returns the number of leases renewed.
local lease_k, ll_k, lim_k = KEYS[1], KEYS[2], KEYS[3]
local exp = now_ms() + tonumber(ARGV[1])
local n, m = 0, 0
for i = 2, #ARGV do
  n = n + redis.call('ZADD', lease_k, 'XX', 'CH', exp, ARGV[i])
  m = m + redis.call('ZADD', ll_k, 'XX', 'CH', exp, ARGV[i])
end
if m > 0 then redis.call('PEXPIRE', lim_k, LIM_TTL_MS) end
return n
