-- ksync: KEYS keys
--        ARGV key instance mine expat
-- sync for one key of a team (its figures in the period's keys hash): makes
-- this instance's share of the key's spent (field b:<key>:<instance>) equal
-- to mine, what its own ledger says the key spent this period, moving the
-- key's spent (s:<key>) by the difference; after Redis lost its data the
-- first ksync re-adds the whole share, a repeat adds nothing.
-- Returns {1 share was present | 0 absent, previous share, the key's spent,
-- its loaned} (the last two after the step).
local keys_k = KEYS[1]
local kid, inst, mine, expat = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local bf, sf = 'b:' .. kid .. ':' .. inst, 's:' .. kid
local prev = redis.call('HGET', keys_k, bf)
local had = 1
if not prev then prev = "0"; had = 0 end
if prev ~= mine then
  hincr(keys_k, sf, mine)
  hdecr(keys_k, sf, prev)
end
if prev ~= mine or had == 0 then redis.call('HSET', keys_k, bf, mine) end
if redis.call('HEXISTS', keys_k, sf) == 0 then redis.call('HSET', keys_k, sf, "0") end
expire_at(expat, keys_k)
local v = redis.call('HMGET', keys_k, sf, 'l:' .. kid)
return {had, prev, v[1] or "0", v[2] or "0"}
