-- reserve: KEYS spent loaned holds lease keys lim limlease
--          ARGV rid amount cap(-1 = none) lease_ms expat instance
--               key kcap tokens tlim klim mode
-- Reaps expired holds, then, all or nothing: the team's cap (spent + loaned
-- + amount <= cap), the key's cap (its spent and loaned in the period's keys
-- hash), the team's rate limits, the key's; then adds the hold (with the
-- instance holding it) and its lease, its amount to the key's loaned, and
-- the request to the rate-limit windows and in-flight counts; or refuses.
-- key: the key's id ("" none); kcap: its cap (-1: none, and the key's period
-- figures are not kept); tokens: prompt estimate + completion reserved;
-- tlim / klim: the team's / key's limits "rpm tpm max_inflight
-- spend_minute spend_hour" ("" none: the subject is not counted); mode "a"
-- adopts a hold admitted while Redis was down: nothing is checked, and it
-- counts in flight but not in the request and token windows.
-- Returns {code, spent, loaned, kspent, kloaned, which, scope, retry_after_s,
-- spent_in_window, limit, limit_requests, remaining_requests,
-- reset_requests_ms, limit_tokens, remaining_tokens, reset_tokens_ms}:
-- code 1 admitted (figures after the step; the last six for the tighter of
-- team and key), 0 the team's cap refused, 2 the key's cap refused, 3 a
-- limit refused (which 1 rpm, 2 tpm, 3 in flight, 4 spend per minute, 5 per
-- hour; scope 1 team, 2 key; the last six that subject's).
local spent_k, loaned_k, holds_k, lease_k, keys_k, lim_k, ll_k =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local rid, amount, cap, lease_ms, expat, inst = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local kid, kcap, tokens, tlim, klim = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10], ARGV[11]
local adopt = ARGV[12] == "a"
local now = now_ms()
reap(holds_k, lease_k, loaned_k, keys_k, now)
local spent, loaned = get0(spent_k), get0(loaned_k)
local kept = kid ~= "" and kcap ~= "-1"
local kspent, kloaned = "0", "0"
if kept then
  local v = redis.call('HMGET', keys_k, 's:' .. kid, 'l:' .. kid)
  kspent, kloaned = v[1] or "0", v[2] or "0"
end
if redis.call('HEXISTS', holds_k, rid) == 1 then
  return {1, spent, loaned, kspent, kloaned}   -- a retried reserve: already held
end
if not adopt then
  if cap ~= "-1" and not fits(spent, loaned, amount, cap) then
    return {0, spent, loaned, kspent, kloaned}
  end
  if kept and not fits(kspent, kloaned, amount, kcap) then
    return {2, spent, loaned, kspent, kloaned}
  end
end
local M, L, T, K, tv, kv
if tlim ~= "" or klim ~= "" then
  M = LIMITS()
  M.reap(lim_k, ll_k, now)
  local names = {}
  if tlim ~= "" then names[#names + 1] = "T" end
  if klim ~= "" then names[#names + 1] = "K:" .. kid end
  L = M.open(lim_k, names, now, {})
  if tlim ~= "" then T = L.S["T"] end
  if klim ~= "" then K = L.S["K:" .. kid] end
  if not adopt then
    if T then tv = M.check(L, M.conf(tlim), T, now, tokens, amount) end
    if K and (not tv or tv.which == 0) then kv = M.check(L, M.conf(klim), K, now, tokens, amount) end
    local v, scope = nil, 0
    if tv and tv.which > 0 then v, scope = tv, 1 elseif kv and kv.which > 0 then v, scope = kv, 2 end
    if v then
      M.save(L)                          -- the windows moved on
      return {3, spent, loaned, kspent, kloaned, v.which, scope, v.retry, v.sw, v.limit,
              v.lr, v.rr, v.rrm, v.lt, v.rt, v.rtm}
    end
  end
end
redis.call('INCRBY', loaned_k, amount)
local hv = amount .. "@" .. inst
if kept then
  hv = amount .. ":" .. kid .. "@" .. inst
  kloaned = dadd(kloaned, amount)
  redis.call('HSET', keys_k, 'l:' .. kid, kloaned)
  expire_at(expat, keys_k)
end
redis.call('HSET', holds_k, rid, hv)
redis.call('ZADD', lease_k, now + tonumber(lease_ms), rid)
if redis.call('EXISTS', spent_k) == 0 then redis.call('SET', spent_k, "0") end
expire_at(expat, spent_k, loaned_k, holds_k, lease_k)
local out = {1, spent, get0(loaned_k), kspent, kloaned}
if L then
  local tk = tokens
  if adopt then tk = -1 end
  if T then M.take(L, T, now, tk, amount) end
  if K then M.take(L, K, now, tk, amount) end
  M.save(L, { 'h:' .. rid, amount .. " " .. I(tk) .. " " .. I(now) .. " " ..
              (T and "t" or "") .. (K and "k" or "") .. " " .. (kid ~= "" and kid or "-") })
  redis.call('ZADD', ll_k, now + tonumber(lease_ms), rid)
  redis.call('PEXPIRE', lim_k, LIM_TTL_MS)
  redis.call('PEXPIRE', ll_k, LIM_TTL_MS)
  local h = M.tighter(tv, kv)
  for _, x in ipairs({ 0, 0, 0, "0", "0", h.lr, h.rr, h.rrm, h.lt, h.rt, h.rtm }) do
    out[#out + 1] = x
  end
end
return out
