-- release: KEYS loaned holds lease keys lim limlease
--          ARGV rid
-- Ends a hold charging nothing, as if it had never been taken: out of
-- loaned (the team's and its key's), out of the rate-limit windows and the
-- in-flight counts. Removing what is not there is a no-op, so a retry
-- cannot release twice. Returns {1 released | 0 no such hold}.
local loaned_k, holds_k, lease_k, keys_k, lim_k, ll_k =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local rid = ARGV[1]
local rec = lim_rec(lim_k, rid)
if rec then
  local now = now_ms()
  for _, S in ipairs(lim_subjects(lim_k, rec.fl, rec.kid)) do
    lim_end(S, rec, now, false, 0, "0")
    subj_save(S)
  end
  lim_forget(lim_k, ll_k, rid)
end
if drop_hold(holds_k, lease_k, loaned_k, keys_k, rid) then return {1} end
return {0}
