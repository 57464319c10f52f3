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
-- A non-negative decimal string short enough that Lua's doubles hold it,
-- and sums of a few of them, exactly (< 2^53).
local function small(s)
  return #s <= 15 and string.byte(s, 1) ~= 45
end
-- true when a + b + c <= cap (all non-negative decimal strings)
local function fits(a, b, c, cap)
  a, b, c, cap = tostring(a or "0"), tostring(b or "0"), tostring(c or "0"), tostring(cap or "0")
  if small(a) and small(b) and small(c) and small(cap) then
    return tonumber(a) + tonumber(b) + tonumber(c) <= tonumber(cap)
  end
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
  if a == "0" then return b end
  if b == "0" then return a end
  if small(a) and small(b) then return I(tonumber(a) + tonumber(b)) end
  local ah, al = split(a)
  local bh, bl = split(b)
  local lo = al + bl
  return join(ah + bh + math.floor(lo / 1e9), lo % 1e9)
end
local function dsub(a, b)
  if b == "0" then return a end
  if small(a) and small(b) then
    local r = tonumber(a) - tonumber(b)
    if r < 0 then return "0" end
    return I(r)
  end
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
-- ---- Rate limits: ratelim.c's sliding windows, in Redis ----
-- A team's limit state is one hash, pm:{TEAM}:lim (not per period: windows
-- slide across period ends), for its subjects: the team "T" and each key
-- "K:<id>". A subject has ratelim.c's four windows: q requests, n tokens and
-- m spend per minute (60 one-second buckets, sharing the newest bucket's
-- index, time / 1 s), and o spend per hour (60 one-minute buckets). Field
-- <subj> holds "<newest second> <newest minute> <sum q> <sum n> <sum m>
-- <sum o> <in flight> <loaned>", field <subj>|<second % 60> a second's
-- bucket "<q> <n> <m>", field <subj>|o<minute % 60> a minute's "<o>".
-- Each admitted request's record is field h:<rid>, "<amount> <tokens>
-- <admitted ms> <subjects> <key>" (subjects "t", "k" or "tk"; tokens -1 when
-- it is not in the token window), with a lease in pm:{TEAM}:limlease like
-- the period's holds: a dead instance's requests leave the in-flight counts
-- when their lease runs out. Counts and tokens are Lua numbers (exact below
-- 2^53); money is decimal strings. A step reads the hash once (HMGET: the
-- subjects and the buckets of now; again only when a window moved on by
-- more than one bucket) and writes it once (HSET). The functions are made
-- only by the scripts that use them (LIMITS()).
local LIM_TTL_MS = 7200000            -- the state outlives the hour window when idle
local function LIMITS()
  local M = {}
  local NB = 60

  -- A record's fields, or nil.
  function M.parse(v)
    if not v then return nil end
    local a, t, at, fl, kid = string.match(v, "^(%d+) (%-?%d+) (%d+) (%a+) (%S+)$")
    if not a then return nil end
    return { amount = a, tokens = tonumber(t), at = tonumber(at), fl = fl, kid = kid }
  end

  -- The subjects a record (or a settle's flags) names.
  function M.names(fl, kid)
    local out = {}
    if string.find(fl, "t", 1, true) then out[#out + 1] = "T" end
    if string.find(fl, "k", 1, true) then out[#out + 1] = "K:" .. kid end
    return out
  end

  local function sec(t) return math.floor(t / 1000) end
  local function minute(t) return math.floor(t / 60000) end

  -- Reads the subjects (with the buckets of now and of the times in ats)
  -- and the extra fields, in one HMGET, and moves every window on to now.
  function M.open(lim_k, names, now, ats, extra)
    local f = {}
    local s1, m1 = sec(now), minute(now)
    for _, nm in ipairs(names) do
      f[#f + 1] = nm
      f[#f + 1] = nm .. "|" .. I(s1 % NB)
      f[#f + 1] = nm .. "|o" .. I(m1 % NB)
      for _, t in ipairs(ats) do f[#f + 1] = nm .. "|" .. I(sec(t) % NB) end
    end
    for _, x in ipairs(extra or {}) do f[#f + 1] = x end
    local v = redis.call('HMGET', lim_k, unpack(f))
    local L = { k = lim_k, S = {}, list = {}, extra = {} }
    local j = 0
    for _, nm in ipairs(names) do
      local h1, h60, sq, sn, sm, so, i, l = string.match(v[j + 1] or "",
        "^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+) (%d+) (%d+) (%-?%d+) (%d+)$")
      local S = { p = nm, h1 = tonumber(h1) or 0, h60 = tonumber(h60) or 0,
                  q = tonumber(sq) or 0, n = tonumber(sn) or 0, m = sm or "0", o = so or "0",
                  i = tonumber(i) or 0, l = l or "0", b = {}, bo = {}, dirty = {}, odirty = {} }
      S.raw = { [s1 % NB] = v[j + 2] }
      S.rawo = { [m1 % NB] = v[j + 3] }
      for k, t in ipairs(ats) do S.raw[sec(t) % NB] = v[j + 3 + k] end
      j = j + 3 + #ats
      L.S[nm] = S
      L.list[#L.list + 1] = S
    end
    for i, x in ipairs(extra or {}) do L.extra[x] = v[j + i] end
    for _, S in ipairs(L.list) do M.advance(L, S, now) end
    return L
  end

  -- A second's bucket {q, n, m} (read, or 0), and a minute's.
  local function b1(L, S, k)
    local b = S.b[k]
    if b then return b end
    if S.raw[k] == nil then error("limits: bucket " .. k .. " was not read") end
    local q, n, m = string.match(S.raw[k] or "", "^(%-?%d+) (%-?%d+) (%d+)$")
    b = { q = tonumber(q) or 0, n = tonumber(n) or 0, m = m or "0" }
    S.b[k] = b
    return b
  end
  local function b60(S, k)
    local b = S.bo[k]
    if b then return b end
    if S.rawo[k] == nil then error("limits: bucket o" .. k .. " was not read") end
    b = S.rawo[k] or "0"
    S.bo[k] = b
    return b
  end

  -- Buckets that left the windows are emptied (read first when more than
  -- one bucket left: only the newest was read with the subject).
  function M.advance(L, S, now)
    local s1, m1 = sec(now), minute(now)
    local need = {}
    if s1 > S.h1 and s1 - S.h1 < NB then
      for t = S.h1 + 1, s1 - 1 do need[#need + 1] = t % NB end
    end
    local needo = {}
    if m1 > S.h60 and m1 - S.h60 < NB then
      for t = S.h60 + 1, m1 - 1 do needo[#needo + 1] = t % NB end
    end
    if #need + #needo > 0 then
      local f = {}
      for _, k in ipairs(need) do f[#f + 1] = S.p .. "|" .. I(k) end
      for _, k in ipairs(needo) do f[#f + 1] = S.p .. "|o" .. I(k) end
      local v = redis.call('HMGET', L.k, unpack(f))
      for i, k in ipairs(need) do S.raw[k] = v[i] end
      for i, k in ipairs(needo) do S.rawo[k] = v[#need + i] end
    end
    if s1 > S.h1 then
      if s1 - S.h1 >= NB then
        S.q, S.n, S.m = 0, 0, "0"
        for k = 0, NB - 1 do S.b[k] = { q = 0, n = 0, m = "0" }; S.dirty[k] = true end
      else
        for t = S.h1 + 1, s1 do
          local k = t % NB
          local b = b1(L, S, k)
          S.q, S.n, S.m = S.q - b.q, S.n - b.n, dsub(S.m, b.m)
          S.b[k] = { q = 0, n = 0, m = "0" }
          S.dirty[k] = true
        end
      end
      S.h1 = s1
      S.sdirty = true
    end
    if m1 > S.h60 then
      if m1 - S.h60 >= NB then
        S.o = "0"
        for k = 0, NB - 1 do S.bo[k] = "0"; S.odirty[k] = true end
      else
        for t = S.h60 + 1, m1 do
          local k = t % NB
          S.o = dsub(S.o, b60(S, k))
          S.bo[k] = "0"
          S.odirty[k] = true
        end
      end
      S.h60 = m1
      S.sdirty = true
    end
  end

  -- Adds to the second of at (now, or a time passed to open) dq requests,
  -- dn tokens and dm (a non-negative decimal string) spend, if that second
  -- is still in the windows.
  local function add1(L, S, at, dq, dn, dm)
    local t = sec(at)
    if t > S.h1 or t <= S.h1 - NB then return end
    local b = b1(L, S, t % NB)
    b.q, b.n = b.q + dq, b.n + dn
    S.q, S.n = S.q + dq, S.n + dn
    if dm ~= "0" then b.m, S.m = dadd(b.m, dm), dadd(S.m, dm) end
    S.dirty[t % NB] = true
    S.sdirty = true
  end

  -- Milliseconds from now until window w's sum is at most target (the
  -- oldest buckets leaving first); 0 when it already is. (Money in doubles:
  -- only a time is computed here.)
  local function ms_until(L, S, w, now, target)
    local sum = tonumber(S[w])
    if sum <= target then return 0 end
    local hour = w == "o"
    local head = hour and S.h60 or S.h1
    local f = {}
    for k = 1, NB do f[k] = S.p .. (hour and "|o" or "|") .. I((head + k) % NB) end
    local v = redis.call('HMGET', L.k, unpack(f))
    for k = 1, NB do
      local s = (head + k) % NB
      if hour then
        if S.rawo[s] == nil then S.rawo[s] = v[k] end
        sum = sum - tonumber(b60(S, s))
      else
        if S.raw[s] == nil then S.raw[s] = v[k] end
        sum = sum - tonumber(b1(L, S, s)[w])
      end
      if sum <= target then return (head + k) * (hour and 60000 or 1000) - now end
    end
    return (head + NB) * (hour and 60000 or 1000) - now
  end

  local function secs_up(ms)
    local s = math.floor((ms + 999) / 1000)
    if s < 1 then return 1 end
    if s > 86400 then return 86400 end
    return s
  end

  -- "rpm tpm max_inflight spend_minute spend_hour" (0 = none)
  function M.conf(s)
    local r, t, i, sm, sh = string.match(s, "^(%d+) (%d+) (%d+) (%d+) (%d+)$")
    return { rpm = tonumber(r) or 0, tpm = tonumber(t) or 0, inf = tonumber(i) or 0,
             sm = sm or "0", sh = sh or "0" }
  end

  -- ratelim_check: whether a request of tokens and reservation reserve fits
  -- every limit of c; the verdict with the header figures (remaining counts
  -- this request as taken when it fits).
  function M.check(L, c, S, now, tokens, reserve)
    local o = { which = 0, retry = 0, sw = "0", limit = "0", lr = 0, rr = 0, rrm = 0,
                lt = 0, rt = 0, rtm = 0 }
    if c.inf > 0 and S.i + 1 > c.inf then
      o.which = 3; o.retry = 1               -- a request in flight ends when it ends
    elseif c.rpm > 0 and S.q + 1 > c.rpm then
      o.which = 1; o.retry = secs_up(ms_until(L, S, "q", now, c.rpm - 1))
    elseif c.tpm > 0 and S.n + tokens > c.tpm then
      o.which = 2
      if tokens > c.tpm then o.retry = 60
      else o.retry = secs_up(ms_until(L, S, "n", now, c.tpm - tokens)) end
    elseif c.sm ~= "0" and not fits(S.m, S.l, reserve, c.sm) then
      o.which, o.sw, o.limit = 4, dadd(S.m, S.l), c.sm
      local room = tonumber(c.sm) - tonumber(S.l) - tonumber(reserve)
      if room < 0 then o.retry = 60 else o.retry = secs_up(ms_until(L, S, "m", now, room)) end
    elseif c.sh ~= "0" and not fits(S.o, S.l, reserve, c.sh) then
      o.which, o.sw, o.limit = 5, dadd(S.o, S.l), c.sh
      local room = tonumber(c.sh) - tonumber(S.l) - tonumber(reserve)
      if room < 0 then o.retry = 3600 else o.retry = secs_up(ms_until(L, S, "o", now, room)) end
    end
    local took_req, took_tok = 0, 0
    if o.which == 0 then took_req, took_tok = 1, tokens end
    if c.rpm > 0 then
      o.lr = c.rpm
      o.rr = math.max(0, c.rpm - S.q - took_req)
      o.rrm = ms_until(L, S, "q", now, c.rpm - 1 - took_req)
    end
    if c.tpm > 0 then
      o.lt = c.tpm
      o.rt = math.max(0, c.tpm - S.n - took_tok)
      o.rtm = ms_until(L, S, "n", now, c.tpm - tokens - took_tok)
    end
    return o
  end

  -- The header figures of the tighter of two verdicts (either may be nil).
  function M.tighter(a, b)
    local o = { lr = 0, rr = 0, rrm = 0, lt = 0, rt = 0, rtm = 0 }
    for _, v in ipairs({ a, b }) do
      if v and v.lr > 0 and (o.lr == 0 or v.rr < o.rr) then o.lr, o.rr, o.rrm = v.lr, v.rr, v.rrm end
      if v and v.lt > 0 and (o.lt == 0 or v.rt < o.rt) then o.lt, o.rt, o.rtm = v.lt, v.rt, v.rtm end
    end
    return o
  end

  -- ratelim_take (tokens -1: in flight only, not in the windows).
  function M.take(L, S, now, tokens, reserve)
    if tokens >= 0 then add1(L, S, now, 1, tokens, "0") end
    S.i = S.i + 1
    S.l = dadd(S.l, reserve)
    S.sdirty = true
  end

  -- The end of a request with record rec (nil when its lease was reaped:
  -- then only its charge counts): out of flight, tokens corrected to actual,
  -- and (settled) the charge in the spend windows; or (released) as if
  -- never taken.
  function M.finish(L, S, rec, now, settled, actual, charge)
    if rec then
      if rec.tokens >= 0 then
        if settled then add1(L, S, rec.at, 0, actual - rec.tokens, "0")
        else add1(L, S, rec.at, -1, -rec.tokens, "0") end
      end
      S.i = math.max(0, S.i - 1)
      S.l = dsub(S.l, rec.amount)
      S.sdirty = true
    end
    if settled and charge ~= "0" then
      add1(L, S, now, 0, 0, charge)
      local k = minute(now) % NB
      S.bo[k] = dadd(b60(S, k), charge)
      S.o = dadd(S.o, charge)
      S.odirty[k] = true
    end
  end

  -- Writes what changed, and the extra field-value pairs, in one HSET.
  function M.save(L, extra)
    local f = {}
    for _, S in ipairs(L.list) do
      for k, _ in pairs(S.dirty) do
        local b = S.b[k]
        f[#f + 1] = S.p .. "|" .. I(k)
        f[#f + 1] = I(b.q) .. " " .. I(b.n) .. " " .. b.m
      end
      for k, _ in pairs(S.odirty) do
        f[#f + 1] = S.p .. "|o" .. I(k)
        f[#f + 1] = S.bo[k]
      end
      if S.sdirty then
        f[#f + 1] = S.p
        f[#f + 1] = I(S.h1) .. " " .. I(S.h60) .. " " .. I(S.q) .. " " .. I(S.n) .. " " ..
                    S.m .. " " .. S.o .. " " .. I(S.i) .. " " .. S.l
      end
    end
    for _, x in ipairs(extra or {}) do f[#f + 1] = x end
    if #f > 0 then redis.call('HSET', L.k, unpack(f)) end
  end

  -- Drops the records whose lease ran out: out of the in-flight counts.
  function M.reap(lim_k, ll_k, now)
    local gone = redis.call('ZRANGEBYSCORE', ll_k, '-inf', now, 'LIMIT', 0, 512)
    for _, rid in ipairs(gone) do
      local rec = M.parse(redis.call('HGET', lim_k, 'h:' .. rid))
      if rec then
        local L = M.open(lim_k, M.names(rec.fl, rec.kid), now, {})
        for _, S in ipairs(L.list) do
          S.i = math.max(0, S.i - 1)
          S.l = dsub(S.l, rec.amount)
          S.sdirty = true
        end
        M.save(L)
      end
      redis.call('HDEL', lim_k, 'h:' .. rid)
      redis.call('ZREM', ll_k, rid)
    end
  end

  return M
end
