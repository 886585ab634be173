package redislimit

// takeLua checks and charges every bucket of one request, atomically (see
// the package comment). A clock prelude (redisClock or argClock) sets now,
// in microseconds since the epoch, before it runs.
//
// Bucket i is KEYS[i] and ARGV[3i-2], ARGV[3i-1], ARGV[3i], all integer
// microseconds or counts:
//
//   - a token bucket: 0, then what this request adds to its TAT (cost ×
//     interval), then its capacity tau (interval × burst). The key is a
//     string, the TAT.
//   - a sliding window: its slot length L (at least 1), then its requests
//     N, then the cost (capped at N+1: anything above never fits). The key
//     is a hash: field "L" holds L, and field s (a slot index, floor of
//     µs / L) the cost admitted in slot s. Only the counted slots are kept.
//
// Every value stays below 2^53 (Go enforces the bounds), so the doubles
// Lua computes with are exact integers.
//
// It answers {allowed, now, ...} and then, per bucket, read before any
// charge: a token bucket's TAT raised to now; a sliding window's current
// slot and the counts of its Slots+1 counted slots, oldest first. From
// these Go computes the Result exactly as ratelimit.Limiter does.
//
// A key of the other kind (the limit's algorithm changed) or a window of
// another slot length (its window changed) reads as no state and is
// replaced when written, so switching never fails. A bucket named twice
// reads the same state both times and is charged once.
//
// Values are written with %.0f because Lua 5.1 would print a large double
// in exponent form.
//
// A key lives a second (SLACK, ms) past the moment its state is full or
// empty again: a full bucket and an absent key mean the same, so keeping
// it longer costs memory only, while expiring it on Redis's clock the
// moment a replica's clock says it is full would hand a replica whose
// clock runs behind (or a request that read the clock before another's) a
// fresh bucket it has not earned.
const takeLua = `
local K = 16
local SLACK = 1000
local n = #KEYS
local out = {0, now}
local plans = {}
local allowed = 1
for i = 1, n do
  local slot = tonumber(ARGV[3*i-2])
  local a, b = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i])
  if slot == 0 then
    local v = redis.pcall('GET', KEYS[i])
    local tat = nil
    if type(v) == 'string' then tat = tonumber(v) end
    if tat == nil or tat < now then tat = now end
    local nxt = tat + a
    if nxt - now > b then allowed = 0 end
    out[#out+1] = tat
    plans[i] = {nxt = nxt}
  else
    local cur = math.floor(now / slot)
    if cur * slot > now then cur = cur - 1 elseif (cur + 1) * slot <= now then cur = cur + 1 end
    local h = redis.pcall('HGETALL', KEYS[i])
    local fresh = true
    local counts = {}
    if h.err == nil then
      for j = 1, #h, 2 do
        if h[j] == 'L' and tonumber(h[j+1]) == slot then fresh = false end
      end
    end
    local stale = {}
    if not fresh then
      for j = 1, #h, 2 do
        local s, c = tonumber(h[j]), tonumber(h[j+1])
        if h[j] ~= 'L' and s and c then
          counts[s] = c
          if s > cur then cur = s end
        end
      end
      for s, _ in pairs(counts) do
        if s < cur - K then stale[#stale+1] = string.format('%.0f', s) end
      end
    end
    out[#out+1] = cur
    local counted = 0
    for s = cur - K, cur do
      local c = counts[s] or 0
      counted = counted + c
      out[#out+1] = c
    end
    if counted + b > a then allowed = 0 end
    plans[i] = {cur = cur, slot = slot, count = (counts[cur] or 0) + b, fresh = fresh, stale = stale}
  end
end
if allowed == 1 then
  local done = {}
  for i = 1, n do
    local k, p = KEYS[i], plans[i]
    if not done[k] then
      done[k] = true
      if p.nxt then
        local ttl = math.ceil((p.nxt - now) / 1000) + SLACK
        redis.call('SET', k, string.format('%.0f', p.nxt), 'PX', string.format('%.0f', ttl))
      else
        if p.fresh then
          redis.call('DEL', k)
        elseif #p.stale > 0 then
          redis.call('HDEL', k, unpack(p.stale))
        end
        redis.call('HSET', k, 'L', string.format('%.0f', p.slot), string.format('%.0f', p.cur), string.format('%.0f', p.count))
        local ttl = math.ceil(((p.cur + K + 1) * p.slot - now) / 1000) + SLACK
        redis.call('PEXPIRE', k, string.format('%.0f', ttl))
      end
    end
  end
end
out[1] = allowed
return out
`
