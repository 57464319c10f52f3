-- view: KEYS spent loaned holds lease by keys
--       ARGV [key]
-- The fleet's figures for the period after reaping expired holds.
-- Returns {spent, loaned, instances with a share, key's spent, key's loaned}
-- (the key's 0 without key, or when its figures are not kept).
local spent_k, loaned_k, holds_k, lease_k, by_k, keys_k =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local kid = ARGV[1] or ""
reap(holds_k, lease_k, loaned_k, keys_k, now_ms())
local ks, kl = "0", "0"
if kid ~= "" then
  local v = redis.call('HMGET', keys_k, 's:' .. kid, 'l:' .. kid)
  ks, kl = v[1] or "0", v[2] or "0"
end
return {get0(spent_k), get0(loaned_k), redis.call('HLEN', by_k), ks, kl}
