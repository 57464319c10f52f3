-- settle: KEYS spent loaned holds lease by done keys lim limlease
--         ARGV rid charge instance expat done_ttl_s key tokens track
-- Ends a hold with its charge: the hold (if its lease has not been reaped)
-- leaves loaned, the charge goes into spent and into this instance's share.
-- key: the key's id ("" none); track: what its reserve took besides the
-- team's figures — "c" the key's period figures (the charge also goes into
-- the key's spent and this instance's share of it), "t" / "k" the team's /
-- key's rate limits (out of flight, tokens corrected to tokens, the
-- request's real use, the charge into the spend windows).
-- Idempotent by request id: the done key makes a retry a no-op, and a hold
-- that already expired is still charged exactly once.
-- Returns {1 applied | 0 already settled}.
local spent_k, loaned_k, holds_k, lease_k, by_k, done_k, keys_k, lim_k, ll_k =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local rid, charge, inst, expat, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local kid, tokens, track = ARGV[6], tonumber(ARGV[7]), ARGV[8]
if redis.call('EXISTS', done_k) == 1 then return {0} end
drop_hold(holds_k, lease_k, loaned_k, keys_k, rid)
redis.call('INCRBY', spent_k, charge)
redis.call('HINCRBY', by_k, inst, charge)
if string.find(track, "c", 1, true) then
  hincr(keys_k, 's:' .. kid, charge)
  hincr(keys_k, 'b:' .. kid .. ':' .. inst, charge)
  expire_at(expat, keys_k)
end
if string.find(track, "t", 1, true) or string.find(track, "k", 1, true) then
  local M = LIMITS()
  local now = now_ms()
  local rec = M.parse(redis.call('HGET', lim_k, 'h:' .. rid))
  local L = M.open(lim_k, M.names(track, kid), now, rec and { rec.at } or {})
  for _, S in ipairs(L.list) do M.finish(L, S, rec, now, true, tokens, charge) end
  M.save(L)
  if rec then redis.call('HDEL', lim_k, 'h:' .. rid) end
  redis.call('ZREM', ll_k, rid)
  redis.call('PEXPIRE', lim_k, LIM_TTL_MS)
end
redis.call('SET', done_k, "1", 'EX', ttl)
expire_at(expat, spent_k, loaned_k, holds_k, lease_k, by_k)
return {1}
