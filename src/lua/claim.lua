-- claim: KEYS claim
--        ARGV instance expat
-- Claims an alert event for this instance, so that one instance of the
-- fleet records and sends it: sets the claim to the instance unless another
-- holds it; the claim lives until its period has ended plus a grace
-- (expat, unix seconds; "0" = no period, no expiry). Returns 1 when the
-- claim is this instance's (new, or claimed by it before, e.g. before a
-- crash), 0 when another instance holds it.
local k = KEYS[1]
local cur = redis.call('GET', k)
if cur then
  if cur == ARGV[1] then return 1 end
  return 0
end
redis.call('SET', k, ARGV[1])
expire_at(ARGV[2], k)
return 1
