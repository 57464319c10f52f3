-- pinmeter budget scripts: shared helpers, prepended to every script.
-- Money is integer nano-credits kept as decimal strings and changed only
-- with INCRBY/DECRBY/HINCRBY (exact int64). Lua numbers are doubles, so a
-- cap comparison splits each amount into 9-digit halves, which stay exact.
-- Scripts read the server's clock (TIME) and then write: Redis 7 replicates
-- scripts by their effects; Redis 5 and 6 must be asked to.
if redis.replicate_commands then redis.replicate_commands() end
local function split(s)
  s = tostring(s or "0")
  if string.sub(s, 1, 1) == "-" then return 0, 0 end
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end
-- true when a + b + c <= cap (all non-negative decimal strings)
local function fits(a, b, c, cap)
  local ah, al = split(a)
  local bh, bl = split(b)
  local ch, cl = split(c)
  local hi, lo = ah + bh + ch, al + bl + cl
  hi = hi + math.floor(lo / 1e9)
  lo = lo % 1e9
  local kh, kl = split(cap)
  return hi < kh or (hi == kh and lo <= kl)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Ends one hold: out of holds and lease, its amount out of loaned.
-- Returns the amount it held, or nil when there was no such hold.
-- A hold is stored as "<amount>@<instance>": the instance that holds it.
local function drop_hold(holds_k, lease_k, loaned_k, rid)
  local v = redis.call('HGET', holds_k, rid)
  redis.call('ZREM', lease_k, rid)
  if not v then return nil end
  local amt = string.match(v, "^%d+")
  redis.call('DECRBY', loaned_k, amt)
  redis.call('HDEL', holds_k, rid)
  return amt
end
-- Drops holds whose lease ran out (their instance died or stopped renewing):
-- loaned goes down by exactly what they held.
local function reap(holds_k, lease_k, loaned_k, now)
  local gone = redis.call('ZRANGEBYSCORE', lease_k, '-inf', now, 'LIMIT', 0, 512)
  for _, rid in ipairs(gone) do drop_hold(holds_k, lease_k, loaned_k, rid) end
  return #gone
end
-- Period keys live until their period has ended plus a grace (ARGV expat,
-- unix seconds; "0" = no period, no expiry).
local function expire_at(expat, ...)
  if expat ~= "0" then
    for _, k in ipairs({...}) do redis.call('EXPIREAT', k, expat) end
  end
end
local function get0(k)
  return redis.call('GET', k) or "0"
end
