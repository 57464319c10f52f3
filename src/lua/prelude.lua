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
-- An integer as a decimal string (never in exponent form).
local function I(x)
  return string.format("%d", x)
end
-- HINCRBY by a non-negative decimal string, or by minus it (Redis refuses
-- "-0"); a field that went below zero is set to 0.
local function hincr(k, f, s)
  if s ~= "0" then redis.call('HINCRBY', k, f, s) end
end
local function hdecr(k, f, s)
  if s ~= "0" and redis.call('HINCRBY', k, f, "-" .. s) < 0 then redis.call('HSET', k, f, "0") end
end
-- a + b and a - b (a >= b; else "0") of non-negative decimal strings, exact.
local function join(hi, lo)
  if hi == 0 then return I(lo) end
  return I(hi) .. string.format("%09d", lo)
end
local function dadd(a, b)
  local ah, al = split(a)
  local bh, bl = split(b)
  local lo = al + bl
  return join(ah + bh + math.floor(lo / 1e9), lo % 1e9)
end
local function dsub(a, b)
  local ah, al = split(a)
  local bh, bl = split(b)
  local hi, lo = ah - bh, al - bl
  if lo < 0 then lo = lo + 1e9; hi = hi - 1 end
  if hi < 0 then return "0" end
  return join(hi, lo)
end
-- Ends one hold: out of holds and lease, its amount out of loaned (and out
-- of its key's loaned in the period's keys hash). Returns the amount it
-- held, or nil when there was no such hold. A hold is stored as
-- "<amount>@<instance>", or "<amount>:<key>@<instance>" when the key's
-- period figures are kept (the key has a cap).
local function drop_hold(holds_k, lease_k, loaned_k, keys_k, rid)
  local v = redis.call('HGET', holds_k, rid)
  redis.call('ZREM', lease_k, rid)
  if not v then return nil end
  local amt, kid = string.match(v, "^(%d+):([^@]+)@")
  if amt then hdecr(keys_k, 'l:' .. kid, amt) else amt = string.match(v, "^%d+") end
  redis.call('DECRBY', loaned_k, amt)
  redis.call('HDEL', holds_k, rid)
  return amt
end
-- Drops holds whose lease ran out (their instance died or stopped renewing):
-- loaned goes down by exactly what they held.
local function reap(holds_k, lease_k, loaned_k, keys_k, now)
  local gone = redis.call('ZRANGEBYSCORE', lease_k, '-inf', now, 'LIMIT', 0, 512)
  for _, rid in ipairs(gone) do drop_hold(holds_k, lease_k, loaned_k, keys_k, rid) end
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
-- ---- Rate limits: limits.c's sliding windows, in Redis ----
-- A team's limit state is one hash, pm:{TEAM}:lim (not per period: windows
-- slide across period ends), for its subjects: the team "T" and each key
-- "K:<id>". A subject has four windows — q requests and n tokens per minute
-- (60 one-second buckets), m spend per minute (60 one-second buckets), o
-- spend per hour (60 one-minute buckets) — each as fields <subj>|<w>|h (the
-- newest bucket's index: time / width), <subj>|<w>|s (the sum) and
-- <subj>|<w>|<index % 60> (a bucket), plus <subj>|i (requests in flight)
-- and <subj>|l (their reservations). Each admitted request's record is field
-- h:<rid>, "<amount> <tokens> <admitted ms> <subjects> <key>" (subjects
-- "t", "k" or "tk"; tokens -1 when it is not in the token window), with a
-- lease in pm:{TEAM}:limlease like the period's holds: a dead instance's
-- requests leave the in-flight counts when their lease runs out. Counts and
-- tokens are Lua numbers (exact below 2^53); money is decimal strings.
local NB = 60
local WINS = { { "q", 1, false }, { "n", 1, false }, { "m", 1, true }, { "o", 60, true } }
local LIM_TTL_MS = 7200000            -- the state outlives the hour window when idle

local function subj_load(lim_k, name)
  local p = name .. "|"
  local f = {}
  for _, d in ipairs(WINS) do f[#f + 1] = p .. d[1] .. "|h"; f[#f + 1] = p .. d[1] .. "|s" end
  f[#f + 1] = p .. "i"
  f[#f + 1] = p .. "l"
  local v = redis.call('HMGET', lim_k, unpack(f))
  local S = { k = lim_k, p = p, i = tonumber(v[9] or 0) or 0, l = v[10] or "0", w = {} }
  for j, d in ipairs(WINS) do
    local sum = v[2 * j] or "0"
    if not d[3] then sum = tonumber(sum) or 0 end
    S.w[d[1]] = { k = lim_k, p = p .. d[1] .. "|", width = d[2], money = d[3],
                  head = tonumber(v[2 * j - 1] or 0) or 0, sum = sum, dirty = false }
  end
  return S
end

local function subj_save(S)
  local f = {}
  for _, d in ipairs(WINS) do
    local w = S.w[d[1]]
    if w.dirty then
      f[#f + 1] = w.p .. "h"; f[#f + 1] = I(w.head)
      f[#f + 1] = w.p .. "s"; f[#f + 1] = w.money and w.sum or I(w.sum)
    end
  end
  if S.idirty then f[#f + 1] = S.p .. "i"; f[#f + 1] = I(S.i) end
  if #f > 0 then redis.call('HSET', S.k, unpack(f)) end
end

-- Moves the window on to now: buckets that left it are emptied.
local function win_advance(w, now)
  local idx = math.floor(now / 1000 / w.width)
  if idx <= w.head then return end
  local f = {}
  if idx - w.head >= NB then
    for j = 0, NB - 1 do f[#f + 1] = w.p .. j end
    w.sum = w.money and "0" or 0
  else
    for j = w.head + 1, idx do f[#f + 1] = w.p .. I(j % NB) end
    local v = redis.call('HMGET', w.k, unpack(f))
    for j = 1, #f do
      if v[j] then
        if w.money then w.sum = dsub(w.sum, v[j]) else w.sum = w.sum - tonumber(v[j]) end
      end
    end
  end
  redis.call('HDEL', w.k, unpack(f))
  w.head = idx
  w.dirty = true
end

-- Adds v (a number; for money a non-negative decimal string) at time at
-- (at or before now), if that is still in the window.
local function win_add(w, now, at, v)
  win_advance(w, now)
  if v == 0 or v == "0" then return end
  local idx = math.floor(at / 1000 / w.width)
  if idx > w.head or idx <= w.head - NB then return end
  redis.call('HINCRBY', w.k, w.p .. I(idx % NB), w.money and v or I(v))
  if w.money then w.sum = dadd(w.sum, v) else w.sum = w.sum + v end
  w.dirty = true
end

-- Milliseconds from now until the window's sum is at most target (the
-- oldest buckets leaving first); 0 when it already is. (Money in doubles:
-- only a time is computed here.)
local function win_ms_until(w, now, target)
  local sum = tonumber(w.sum)
  if sum <= target then return 0 end
  local f = {}
  for k = 1, NB do f[k] = w.p .. I((w.head + k) % NB) end
  local v = redis.call('HMGET', w.k, unpack(f))
  local wms = w.width * 1000
  for k = 1, NB do
    sum = sum - (tonumber(v[k]) or 0)
    if sum <= target then return (w.head + k) * wms - now end
  end
  return (w.head + NB) * wms - now
end

local function secs_up(ms)
  local s = math.floor((ms + 999) / 1000)
  if s < 1 then return 1 end
  if s > 86400 then return 86400 end
  return s
end

-- "rpm tpm max_inflight spend_minute spend_hour" (0 = none)
local function lim_conf(s)
  local c = {}
  for x in string.gmatch(s, "%S+") do c[#c + 1] = x end
  return { rpm = tonumber(c[1]) or 0, tpm = tonumber(c[2]) or 0, inf = tonumber(c[3]) or 0,
           sm = c[4] or "0", sh = c[5] or "0" }
end

-- limits_check: whether a request of tokens and reservation reserve fits
-- every limit of c; the verdict with the header figures (remaining counts
-- this request as taken when it fits).
local function lim_check(c, S, now, tokens, reserve)
  for _, d in ipairs(WINS) do win_advance(S.w[d[1]], now) end
  local q, n, m, h = S.w.q, S.w.n, S.w.m, S.w.o
  local o = { which = 0, retry = 0, sw = "0", limit = "0", lr = 0, rr = 0, rrm = 0,
              lt = 0, rt = 0, rtm = 0 }
  if c.inf > 0 and S.i + 1 > c.inf then
    o.which = 3; o.retry = 1               -- a request in flight ends when it ends
  elseif c.rpm > 0 and q.sum + 1 > c.rpm then
    o.which = 1; o.retry = secs_up(win_ms_until(q, now, c.rpm - 1))
  elseif c.tpm > 0 and n.sum + tokens > c.tpm then
    o.which = 2
    if tokens > c.tpm then o.retry = 60 else o.retry = secs_up(win_ms_until(n, now, c.tpm - tokens)) end
  else
    for _, x in ipairs({ { c.sm, m, 4, 60 }, { c.sh, h, 5, 3600 } }) do
      local lim, w = x[1], x[2]
      if lim ~= "0" and not fits(w.sum, S.l, reserve, lim) then
        o.which = x[3]
        o.sw = dadd(w.sum, S.l)
        o.limit = lim
        local room = tonumber(lim) - tonumber(S.l) - tonumber(reserve)
        if room < 0 then o.retry = x[4] else o.retry = secs_up(win_ms_until(w, now, room)) end
        break
      end
    end
  end
  local took_req, took_tok = 0, 0
  if o.which == 0 then took_req, took_tok = 1, tokens end
  if c.rpm > 0 then
    o.lr = c.rpm
    o.rr = math.max(0, c.rpm - q.sum - took_req)
    o.rrm = win_ms_until(q, now, c.rpm - 1 - took_req)
  end
  if c.tpm > 0 then
    o.lt = c.tpm
    o.rt = math.max(0, c.tpm - n.sum - took_tok)
    o.rtm = win_ms_until(n, now, c.tpm - tokens - took_tok)
  end
  return o
end

-- The header figures of the tighter of two verdicts (either may be nil).
local function lim_tighter(a, b)
  local o = { lr = 0, rr = 0, rrm = 0, lt = 0, rt = 0, rtm = 0 }
  for _, v in ipairs({ a, b }) do
    if v and v.lr > 0 and (o.lr == 0 or v.rr < o.rr) then o.lr, o.rr, o.rrm = v.lr, v.rr, v.rrm end
    if v and v.lt > 0 and (o.lt == 0 or v.rt < o.rt) then o.lt, o.rt, o.rtm = v.lt, v.rt, v.rtm end
  end
  return o
end

-- limits_take (tokens -1: in flight only, not in the windows).
local function lim_take(S, now, tokens, reserve)
  if tokens >= 0 then
    win_add(S.w.q, now, now, 1)
    win_add(S.w.n, now, now, tokens)
  end
  S.i = S.i + 1
  S.idirty = true
  hincr(S.k, S.p .. "l", reserve)
end

-- The end of a request with record rec (nil when its lease was reaped: then
-- only its charge counts): out of flight, tokens corrected to actual, and
-- (settled) the charge in the spend windows; or (released) as if never
-- taken.
local function lim_end(S, rec, now, settled, actual, charge)
  if rec then
    if rec.tokens >= 0 then
      if settled then win_add(S.w.n, now, rec.at, actual - rec.tokens)
      else
        win_add(S.w.q, now, rec.at, -1)
        win_add(S.w.n, now, rec.at, -rec.tokens)
      end
    end
    S.i = math.max(0, S.i - 1)
    S.idirty = true
    hdecr(S.k, S.p .. "l", rec.amount)
  end
  if settled then
    win_add(S.w.m, now, now, charge)
    win_add(S.w.o, now, now, charge)
  end
end

local function lim_rec(lim_k, rid)
  local v = redis.call('HGET', lim_k, 'h:' .. rid)
  if not v then return nil end
  local a, t, at, fl, kid = string.match(v, "^(%d+) (%-?%d+) (%d+) (%a+) (%S+)$")
  if not a then return nil end
  return { amount = a, tokens = tonumber(t), at = tonumber(at), fl = fl, kid = kid }
end

-- The subjects a record (or a settle's flags) names, loaded.
local function lim_subjects(lim_k, fl, kid)
  local out = {}
  if string.find(fl, "t", 1, true) then out[#out + 1] = subj_load(lim_k, "T") end
  if string.find(fl, "k", 1, true) then out[#out + 1] = subj_load(lim_k, "K:" .. kid) end
  return out
end

local function lim_forget(lim_k, ll_k, rid)
  redis.call('HDEL', lim_k, 'h:' .. rid)
  redis.call('ZREM', ll_k, rid)
end

-- Drops the records whose lease ran out: out of the in-flight counts.
local function lim_reap(lim_k, ll_k, now)
  local gone = redis.call('ZRANGEBYSCORE', ll_k, '-inf', now, 'LIMIT', 0, 512)
  for _, rid in ipairs(gone) do
    local rec = lim_rec(lim_k, rid)
    if rec then
      if string.find(rec.fl, "t", 1, true) then
        hdecr(lim_k, "T|i", "1"); hdecr(lim_k, "T|l", rec.amount)
      end
      if string.find(rec.fl, "k", 1, true) then
        hdecr(lim_k, "K:" .. rec.kid .. "|i", "1"); hdecr(lim_k, "K:" .. rec.kid .. "|l", rec.amount)
      end
    end
    lim_forget(lim_k, ll_k, rid)
  end
end
