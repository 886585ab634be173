package redislimit

// takeLua checks and charges every bucket of one request, atomically (see
// the package comment). A clock prelude (redisClock or argClock) sets now,
// in microseconds since the epoch, before it runs.
//
// KEYS[i] is bucket i; ARGV[2i-1] is what this request adds to its TAT
// (cost × interval) and ARGV[2i] its capacity tau (interval × burst), all
// in integer microseconds. Every value stays below 2^53 (Go enforces the
// bounds), so the doubles Lua computes with are exact integers.
//
// It answers {allowed, now, tat_1, ..., tat_n}, each TAT raised to now and
// read before any charge, from which Go computes the Result exactly as
// ratelimit.Limiter does. A bucket named twice reads the same TAT both
// times and is charged once, as in ratelimit.Limiter.
//
// Values are written with %.0f because Lua 5.1
// would print a large double in exponent form.
const takeLua = `
local n = #KEYS
local out = {0, now}
local nexts = {}
local allowed = 1
for i = 1, n do
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then tat = now end
  local nxt = tat + tonumber(ARGV[2*i-1])
  if nxt - now > tonumber(ARGV[2*i]) then allowed = 0 end
  out[i+2] = tat
  nexts[i] = nxt
end
if allowed == 1 then
  for i = 1, n do
    local ttl = math.ceil((nexts[i] - now) / 1000)
    redis.call('SET', KEYS[i], string.format('%.0f', nexts[i]), 'PX', string.format('%.0f', ttl))
  end
end
out[1] = allowed
return out
`
