-- sync: KEYS spent by loaned
--       ARGV instance mine expat
-- Makes this instance's share of the period's spent equal to mine, what its
-- own ledger says it charged (every settle it has had acknowledged). The
-- share field is the mark, set in the same step as the add: after Redis lost
-- its data the first sync re-adds the whole share, a repeat adds nothing.
-- Returns {1 share was present | 0 it was absent, previous share, spent,
-- loaned} (the last two after the step, for the local share in an outage).
local spent_k, by_k, loaned_k = KEYS[1], KEYS[2], KEYS[3]
local inst, mine, expat = ARGV[1], ARGV[2], ARGV[3]
local prev = redis.call('HGET', by_k, inst)
local had = 1
if not prev then prev = "0"; had = 0 end
if prev ~= mine then
  redis.call('INCRBY', spent_k, mine)
  redis.call('DECRBY', spent_k, prev)
end
if prev ~= mine or had == 0 then redis.call('HSET', by_k, inst, mine) end
if redis.call('EXISTS', spent_k) == 0 then redis.call('SET', spent_k, "0") end
expire_at(expat, spent_k, by_k)
return {had, prev, get0(spent_k), get0(loaned_k)}
