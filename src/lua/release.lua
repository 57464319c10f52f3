-- release: KEYS loaned holds lease keys lim limlease
--          ARGV rid
-- Ends a hold charging nothing, as if it had never been taken: out of
-- loaned (the team's and its key's), out of the rate-limit windows and the
-- in-flight counts. Removing what is not there is a no-op, so a retry
-- cannot release twice. Returns {1 released | 0 no such hold}.
local loaned_k, holds_k, lease_k, keys_k, lim_k, ll_k =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local rid = ARGV[1]
local v = redis.call('HGET', lim_k, 'h:' .. rid)
if v then
  local M = LIMITS()
  local rec = M.parse(v)
  if rec then
    local now = now_ms()
    local L = M.open(lim_k, M.names(rec.fl, rec.kid), now, { rec.at })
    for _, S in ipairs(L.list) do M.finish(L, S, rec, now, false, 0, "0") end
    M.save(L)
  end
  redis.call('HDEL', lim_k, 'h:' .. rid)
  redis.call('ZREM', ll_k, rid)
end
if drop_hold(holds_k, lease_k, loaned_k, keys_k, rid) then return {1} end
return {0}
