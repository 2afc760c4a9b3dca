-- One micro-batch of verdicts, atomically, in one round trip. streamer/state/script.py is the
-- only Python that builds these arguments and reads this reply; docs/thresholds.md explains
-- every formula.
--
-- KEYS: for each distinct record key i (1-based), in first-seen order:
--   KEYS[2i-1] = {prefix}:{model_version}:stats:{key}   hash n, mean, var, q
--   KEYS[2i]   = {prefix}:alert:{key}                    hash a (alert state), o:{partition}
-- ARGV[1]: the configuration, a JSON object with named fields (read into `cfg` below).
-- ARGV[2]: the records, packed: 5 big-endian doubles per record, in batch order:
--   key index i, score, ts, partition, offset   (doubles hold every offset below 2^53 exactly)
-- Packed records and replies keep both ends fast: 5 000 separate arguments and 2 000 reply
-- elements cost more to encode and parse in Python than the whole script costs Redis.
--
-- cfg.mode == 'apply': per record, in order: threshold from the key's current stats -> verdict
-- (score > threshold) -> if the (key, partition) has not seen this offset yet: learn, advance
-- the alert state. Reply, as name/value pairs: thresholds (packed doubles), anomalous ('0'/'1'
-- per record), transitions (one JSON object per alert transition), next_thresholds (packed
-- doubles, one per distinct key).
-- cfg.mode == 'peek': no records and no writes; reply: keys (one JSON object per key with its
-- statistics, threshold, alert state and TTL), for dashboards and tests.
--
-- Stored numbers are '%.17g' strings (a double round-trips exactly, while cjson keeps only 14
-- digits); replies carry packed doubles, as Redis would truncate a Lua number to an integer.

local cfg = cjson.decode(ARGV[1])
local records = ARGV[2]

local function fmt(x)
  return string.format('%.17g', x)
end

local stats = {}
local alerts = {}

-- The alert state of a key: one JSON object in one hash field (fewer fields to read and write
-- is most of the per-key cost). Doubles inside it are strings, so no digit is lost.
local function fresh_alert()
  return {state = 'ok', flags = '', window = {}, start = '', last = '', peak = 0,
    peak_threshold = 0, n_anomalous = 0, quiet = 0}
end

-- A key's state is read when its first record comes up, with that record's partition offset:
-- two calls per key.
local function load(i, p)
  local v = redis.call('HMGET', KEYS[2 * i - 1], 'n', 'mean', 'var', 'q')
  stats[i] = {
    n = tonumber(v[1]) or 0, mean = tonumber(v[2]) or 0,
    var = tonumber(v[3]) or 0, q = tonumber(v[4]) or 0,
  }
  local raw = redis.call('HMGET', KEYS[2 * i], 'a', string.format('o:%d', p))
  local a = raw[1] and cjson.decode(raw[1])
  if type(a) ~= 'table' or a.state == nil then
    a = fresh_alert() -- none yet, or written by an older version: start afresh
  end
  a.peak = tonumber(a.peak)
  a.peak_threshold = tonumber(a.peak_threshold)
  for j = 1, #a.window do
    a.window[j] = {a.window[j][1], tonumber(a.window[j][2]), tonumber(a.window[j][3])}
  end
  a.offsets = {[p] = tonumber(raw[2]) or -1}
  a.applied = false
  alerts[i] = a
end

-- The threshold in force for the key's next record. `floor` is the model bundle's calibrated
-- threshold: no policy goes below it, and it alone applies during warm-up.
local function threshold(s)
  local t
  if cfg.policy == 'fixed' then
    t = cfg.fixed
  elseif s.n < cfg.warmup then
    return cfg.floor
  elseif cfg.policy == 'quantile' then
    t = s.q
  else
    t = s.mean + cfg.k_sigma * math.sqrt(s.var)
  end
  if t ~= t or t < cfg.floor then
    t = cfg.floor
  end
  return t
end

-- Learn one applied record. Normal scores update the EW mean/variance; an anomaly's value never
-- enters them. The quantile tracker only needs the sign of (score - q), so outside a firing
-- episode an exceedance counts as one bounded step (without it, a tracker fed only scores below
-- itself would sink to the floor); inside an episode nothing is learned.
local function learn(s, x, anomalous, firing_before)
  if not anomalous then
    local n = s.n + 1
    local a = cfg.alpha
    if 1 / n > a then
      a = 1 / n -- exact running mean/variance until 1/alpha records: no start-up bias
    end
    if n == 1 then
      s.mean = x
      s.var = 0
      s.q = x
    else
      local d = x - s.mean
      local inc = a * d
      s.mean = s.mean + inc
      s.var = (1 - a) * (s.var + d * inc)
    end
    s.n = n
  end
  if s.n == 0 then
    return
  end
  if s.n < cfg.warmup then
    s.q = s.mean + cfg.z * math.sqrt(s.var)
  elseif not (anomalous and firing_before) then
    local sigma = math.sqrt(s.var)
    local tiny = 1e-9 * math.max(1, math.abs(s.mean))
    if sigma < tiny then
      sigma = tiny
    end
    local below = 0
    if x <= s.q then
      below = 1
    end
    s.q = s.q + cfg.quantile_gain * sigma * (cfg.quantile - below)
  end
end

-- One alert transition, as the Alert event's fields (streamer/state/script.py builds it).
local function transition(status, a, ends)
  local severity = 'warning'
  if a.peak >= cfg.critical_ratio * a.peak_threshold then
    severity = 'critical'
  end
  return {status = status, starts_at = a.start, ends_at = ends, peak_score = fmt(a.peak),
    threshold = fmt(a.peak_threshold), n_anomalous = a.n_anomalous, severity = severity,
    model_version = cfg.model_version}
end

local function record_at(p, o)
  return string.format('%d:%d', p, o)
end

-- Advance the key's alert state by one applied record (ts t, partition p, offset o); returns
-- a transition or nil. Strings are only built when needed: this runs per record.
local function observe(a, anomalous, x, thr, t, p, o)
  if a.state == 'firing' then
    if anomalous then
      a.n_anomalous = a.n_anomalous + 1
      a.quiet = 0
      a.last = fmt(t)
      if x > a.peak then
        a.peak = x
        a.peak_threshold = thr
      end
      return nil
    end
    a.quiet = a.quiet + 1
    if a.quiet < cfg.quiet_records then
      return nil
    end
    local ends = a.last
    if tonumber(ends) < tonumber(a.start) then
      ends = a.start -- records of one key from several partitions may arrive out of ts order
    end
    local tx = transition('resolved', a, ends)
    local fired, fired_at = a.fired, a.fired_at
    local offsets = a.offsets
    for name, value in pairs(fresh_alert()) do
      a[name] = value
    end
    a.fired, a.fired_at, a.offsets, a.applied = fired, fired_at, offsets, true
    a.resolved = tx
    a.resolved_at = record_at(p, o)
    return tx
  end
  if anomalous then
    a.flags = a.flags .. '1'
    table.insert(a.window, {fmt(t), x, thr})
  else
    a.flags = a.flags .. '0'
  end
  if #a.flags > cfg.window_m then
    if string.sub(a.flags, 1, 1) == '1' then
      table.remove(a.window, 1)
    end
    a.flags = string.sub(a.flags, 2)
  end
  -- Fire on n_anomalous of the last window_m records, or at once on one record at least
  -- fire_ratio times its (positive) threshold: a short spike far out pages without waiting.
  if not anomalous then
    return nil
  end
  if #a.window < cfg.n_anomalous
      and not (cfg.fire_ratio > 0 and thr > 0 and x >= cfg.fire_ratio * thr) then
    return nil
  end
  a.state = 'firing'
  a.start = a.window[1][1]
  a.last = a.window[#a.window][1]
  a.peak = a.window[1][2]
  a.peak_threshold = a.window[1][3]
  for j = 2, #a.window do
    if a.window[j][2] > a.peak then
      a.peak = a.window[j][2]
      a.peak_threshold = a.window[j][3]
    end
  end
  a.n_anomalous = #a.window
  a.quiet = 0
  a.flags = ''
  a.window = {}
  local tx = transition('firing', a, '')
  a.fired = tx
  a.fired_at = record_at(p, o)
  return tx
end

local function store(i)
  local s = stats[i]
  local a = alerts[i]
  if s.n > 0 then
    redis.call('HSET', KEYS[2 * i - 1], 'n', tostring(s.n), 'mean', fmt(s.mean),
      'var', fmt(s.var), 'q', fmt(s.q))
    redis.call('EXPIRE', KEYS[2 * i - 1], cfg.ttl_s)
  end
  local window = {}
  for j = 1, #a.window do
    window[j] = {a.window[j][1], fmt(a.window[j][2]), fmt(a.window[j][3])}
  end
  local offsets = a.offsets
  a.window, a.peak, a.peak_threshold = window, fmt(a.peak), fmt(a.peak_threshold)
  a.offsets, a.applied = nil, nil
  local fields = {'a', cjson.encode(a)}
  for p, o in pairs(offsets) do
    table.insert(fields, string.format('o:%d', p))
    table.insert(fields, string.format('%d', o))
  end
  redis.call('HSET', KEYS[2 * i], unpack(fields))
  redis.call('EXPIRE', KEYS[2 * i], cfg.ttl_s)
end

if cfg.mode == 'peek' then
  local keys = {}
  for i = 1, #KEYS / 2 do
    load(i, 0)
    local s = stats[i]
    local a = alerts[i]
    local state = a.state
    if state == 'ok' and string.find(a.flags, '1', 1, true) then
      state = 'pending'
    end
    keys[i] = cjson.encode({n = s.n, mean = fmt(s.mean), var = fmt(s.var), q = fmt(s.q),
      threshold = fmt(threshold(s)), warming_up = s.n < cfg.warmup, alert_state = state,
      starts_at = a.start, ttl_s = redis.call('TTL', KEYS[2 * i - 1])})
  end
  return {'keys', keys}
end

local n_records = #records / 40
local thresholds = {}
local anomalies = {}
local transitions = {}
local pos = 1
for r = 1, n_records do
  local i, x, t, p, o
  i, x, t, p, o, pos = struct.unpack('>ddddd', records, pos)
  if stats[i] == nil then
    load(i, p)
  end
  local s = stats[i]
  local a = alerts[i]
  local thr = threshold(s)
  local anomalous = x > thr
  thresholds[r] = struct.pack('>d', thr)
  anomalies[r] = anomalous and '1' or '0'

  local last = a.offsets[p]
  if last == nil then
    last = tonumber(redis.call('HGET', KEYS[2 * i], string.format('o:%d', p))) or -1
  end
  if o > last then
    a.offsets[p] = o
    a.applied = true
    local firing_before = a.state == 'firing'
    learn(s, x, anomalous, firing_before)
    local tx = observe(a, anomalous, x, thr, t, p, o)
    if tx then
      table.insert(transitions, cjson.encode({record = r, replayed = false, alert = tx}))
    end
  else
    a.offsets[p] = last
    local at = record_at(p, o)
    -- A redelivered record: its verdict comes from the current stats, nothing is learned, and
    -- a transition it caused is returned again (same alert_id) in case the first reply was
    -- lost before the alert reached Kafka.
    if cfg.reemit_replayed and at == a.fired_at then
      table.insert(transitions, cjson.encode({record = r, replayed = true, alert = a.fired}))
    end
    if cfg.reemit_replayed and at == a.resolved_at then
      table.insert(transitions, cjson.encode({record = r, replayed = true, alert = a.resolved}))
    end
  end
end

local next_thresholds = {}
for i = 1, #KEYS / 2 do
  next_thresholds[i] = struct.pack('>d', threshold(stats[i])) -- every key has a record
  if alerts[i].applied then
    store(i)
  end
end

return {'thresholds', table.concat(thresholds), 'anomalous', table.concat(anomalies),
  'transitions', transitions, 'next_thresholds', table.concat(next_thresholds)}
