-- One micro-batch of verdicts, atomically, in one round trip (streamer/state.py runs it).
--
-- KEYS: for each distinct record key i (1-based), in first-seen order:
--   KEYS[2i-1] = {prefix}:{model_version}:stats:{key}   hash n, mean, var, q
--   KEYS[2i]   = {prefix}:alert:{key}                    hash a (alert state), o:{partition}
-- ARGV[1..17]: configuration, in the order read below.
-- ARGV[18]: the records, packed: 5 big-endian doubles per record, in batch order:
--   key index i, score, ts, partition, offset   (doubles hold every offset below 2^53 exactly)
-- Packed input and output keep both ends fast: 5 000 separate arguments and 2 000 reply
-- elements cost more to encode and parse in Python than the whole script costs Redis.
--
-- Per record, in order: threshold from the key's current stats -> verdict (score > threshold)
-- -> if the (key, partition) has not seen this offset yet: learn, advance the alert state.
-- Stored numbers are '%.17g' strings (a double round-trips exactly); replies carry packed
-- doubles, as Redis would truncate a Lua number reply to an integer. docs/thresholds.md
-- explains every formula.

local policy = ARGV[1]
local floor = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local z_tau = tonumber(ARGV[4])
local q_gain = tonumber(ARGV[5])
local k_sigma = tonumber(ARGV[6])
local fixed = tonumber(ARGV[7])
local warmup = tonumber(ARGV[8])
local alpha = tonumber(ARGV[9])
local ttl = tonumber(ARGV[10])
local n_fire = tonumber(ARGV[11])
local window_m = tonumber(ARGV[12])
local quiet_records = tonumber(ARGV[13])
local critical_ratio = tonumber(ARGV[14])
local model_version = ARGV[15]
local reemit = ARGV[16] == '1'
local n_keys = tonumber(ARGV[17])
local records = ARGV[18]
local SEP = '\31'

local function fmt(x)
  return string.format('%.17g', x)
end

local stats = {}
local alerts = {}

local function decode_window(text)
  local win = {}
  if text and text ~= '' then
    for entry in string.gmatch(text, '[^;]+') do
      local ts, score, thr = string.match(entry, '^([^,]*),([^,]*),([^,]*)$')
      table.insert(win, {ts, tonumber(score), tonumber(thr)})
    end
  end
  return win
end

local function encode_window(win)
  local parts = {}
  for j = 1, #win do
    parts[j] = win[j][1] .. ',' .. fmt(win[j][2]) .. ',' .. fmt(win[j][3])
  end
  return table.concat(parts, ';')
end

-- A key's state is read when its first record comes up, with that record's partition offset:
-- two calls per key. The alert state is one JSON field (of strings, so no number loses digits):
-- fewer fields to read and write is most of the per-key cost.
local function load(i, p)
  local v = redis.call('HMGET', KEYS[2 * i - 1], 'n', 'mean', 'var', 'q')
  stats[i] = {
    n = tonumber(v[1]) or 0, mean = tonumber(v[2]) or 0,
    var = tonumber(v[3]) or 0, q = tonumber(v[4]) or 0,
  }
  local raw = redis.call('HMGET', KEYS[2 * i], 'a', string.format('o:%d', p))
  local a = {'ok', '', '', '', '', '0', '0', '0', '0', '', '', '', ''}
  if raw[1] then
    a = cjson.decode(raw[1])
  end
  alerts[i] = {
    st = a[1], flags = a[2], win = decode_window(a[3]), start = a[4], last = a[5],
    peak = tonumber(a[6]), pthr = tonumber(a[7]), na = tonumber(a[8]),
    quiet = tonumber(a[9]), txf = a[10], txf_at = a[11], txr = a[12], txr_at = a[13],
    off = {[p] = tonumber(raw[2]) or -1}, applied = false,
  }
end

-- The threshold in force for the key's next record. `floor` is the model bundle's calibrated
-- threshold: no policy goes below it, and it alone applies during warm-up.
local function threshold(s)
  local t
  if policy == 'fixed' then
    t = fixed
  elseif s.n < warmup then
    return floor
  elseif policy == 'quantile' then
    t = s.q
  else
    t = s.mean + k_sigma * math.sqrt(s.var)
  end
  if t ~= t or t < floor then
    t = floor
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
    local a = alpha
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
  if s.n < warmup then
    s.q = s.mean + z_tau * math.sqrt(s.var)
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
    s.q = s.q + q_gain * sigma * (tau - below)
  end
end

local function encode_tx(status, a, ends)
  local severity = 'warning'
  if a.peak >= critical_ratio * a.pthr then
    severity = 'critical'
  end
  return table.concat({status, a.start, ends, fmt(a.peak), fmt(a.pthr), tostring(a.na),
    severity, model_version}, SEP)
end

local function record_at(p, o)
  return string.format('%d:%d', p, o)
end

-- Advance the key's alert state by one applied record (ts t, partition p, offset o); returns
-- an encoded transition or nil. Strings are only built when needed: this runs per record.
local function observe(a, anomalous, x, thr, t, p, o)
  if a.st == 'firing' then
    if anomalous then
      a.na = a.na + 1
      a.quiet = 0
      a.last = fmt(t)
      if x > a.peak then
        a.peak = x
        a.pthr = thr
      end
      return nil
    end
    a.quiet = a.quiet + 1
    if a.quiet < quiet_records then
      return nil
    end
    local ends = a.last
    if tonumber(ends) < tonumber(a.start) then
      ends = a.start -- records of one key from several partitions may arrive out of ts order
    end
    local tx = encode_tx('resolved', a, ends)
    a.txr = tx
    a.txr_at = record_at(p, o)
    a.st = 'ok'
    a.flags = ''
    a.win = {}
    a.start = ''
    a.last = ''
    a.peak = 0
    a.pthr = 0
    a.na = 0
    a.quiet = 0
    return tx
  end
  if anomalous then
    a.flags = a.flags .. '1'
    table.insert(a.win, {fmt(t), x, thr})
  else
    a.flags = a.flags .. '0'
  end
  if #a.flags > window_m then
    if string.sub(a.flags, 1, 1) == '1' then
      table.remove(a.win, 1)
    end
    a.flags = string.sub(a.flags, 2)
  end
  if not anomalous or #a.win < n_fire then
    return nil
  end
  a.st = 'firing'
  a.start = a.win[1][1]
  a.last = a.win[#a.win][1]
  a.peak = a.win[1][2]
  a.pthr = a.win[1][3]
  for j = 2, #a.win do
    if a.win[j][2] > a.peak then
      a.peak = a.win[j][2]
      a.pthr = a.win[j][3]
    end
  end
  a.na = #a.win
  a.quiet = 0
  a.flags = ''
  a.win = {}
  local tx = encode_tx('firing', a, '')
  a.txf = tx
  a.txf_at = record_at(p, o)
  return tx
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

  local last = a.off[p]
  if last == nil then
    last = tonumber(redis.call('HGET', KEYS[2 * i], string.format('o:%d', p))) or -1
  end
  if o > last then
    a.off[p] = o
    a.applied = true
    local firing_before = a.st == 'firing'
    learn(s, x, anomalous, firing_before)
    local tx = observe(a, anomalous, x, thr, t, p, o)
    if tx then
      table.insert(transitions, {r, tx, 0})
    end
  else
    a.off[p] = last
    local at = record_at(p, o)
    -- A redelivered record: its verdict comes from the current stats, nothing is learned, and
    -- a transition it caused is returned again (same alert_id) in case the first reply was
    -- lost before the alert reached Kafka.
    if reemit and at == a.txf_at then
      table.insert(transitions, {r, a.txf, 1})
    end
    if reemit and at == a.txr_at then
      table.insert(transitions, {r, a.txr, 1})
    end
  end
end

local next_thresholds = {}
for i = 1, n_keys do
  local s = stats[i]
  local a = alerts[i]
  next_thresholds[i] = struct.pack('>d', threshold(s)) -- every key has a record, so is loaded
  if a.applied then
    if s.n > 0 then
      redis.call('HSET', KEYS[2 * i - 1], 'n', tostring(s.n), 'mean', fmt(s.mean),
        'var', fmt(s.var), 'q', fmt(s.q))
      redis.call('EXPIRE', KEYS[2 * i - 1], ttl)
    end
    local fields = {'a', cjson.encode({a.st, a.flags, encode_window(a.win), a.start, a.last,
      fmt(a.peak), fmt(a.pthr), tostring(a.na), tostring(a.quiet), a.txf, a.txf_at, a.txr,
      a.txr_at})}
    for p, o in pairs(a.off) do
      table.insert(fields, string.format('o:%d', p))
      table.insert(fields, string.format('%d', o))
    end
    redis.call('HSET', KEYS[2 * i], unpack(fields))
    redis.call('EXPIRE', KEYS[2 * i], ttl)
  end
end

return {table.concat(thresholds), table.concat(anomalies), transitions,
  table.concat(next_thresholds)}
