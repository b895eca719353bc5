-- agentguard's Redis ledger: every call is this one script, so each is one atomic step.
-- ARGV[1] = key prefix ("{namespace}:"), ARGV[2] = the ledger's epoch as this client first saw
-- it, ARGV[3] = the highest write sequence it has seen, ARGV[4] = operation, then the
-- operation's arguments (renumbered from ARGV[2] below). The answer is {write sequence, answer}.
-- Amounts are canonical decimal strings (exact to 2^256; Lua's numbers are doubles), added
-- and compared here in base-10^7 limbs. Times are the strings the caller sent (exact doubles).
local P = ARGV[1]
-- A Redis that came back without its data (no persistence, a failover to an empty replica)
-- has no epoch, or another one: every budget it holds restarted from zero. Refuse, do not count.
if redis.call('GET', P .. 'epoch') ~= ARGV[2] then return {'lost'} end
-- ARGV[3]: the highest write sequence this client has seen. A Redis whose sequence is lower
-- went back in time (restored from an older snapshot, a failover to a lagging replica): the
-- spends after that point are forgotten. Poison the epoch, so every client and every later
-- open refuses too, until a person decides.
local wseq = tonumber(redis.call('GET', P .. 'wseq') or '0')
if wseq < tonumber(ARGV[3]) then
  redis.call('SET', P .. 'epoch', 'rolled-back:' .. ARGV[2])
  return {'rolledback', tostring(wseq)}
end
wseq = redis.call('INCR', P .. 'wseq')
table.remove(ARGV, 3)
table.remove(ARGV, 2)
local op = ARGV[2]

local function limbs(s)
  local t, i = {}, #s
  while i > 0 do
    local j = math.max(1, i - 6)
    t[#t + 1] = tonumber(string.sub(s, j, i))
    i = j - 1
  end
  return t
end
local function text(t)
  local n = #t
  while n > 1 and t[n] == 0 do t[n] = nil; n = n - 1 end
  local out = {tostring(t[n])}
  for k = n - 1, 1, -1 do out[#out + 1] = string.format('%07d', t[k]) end
  return table.concat(out)
end
local function add(a, b)
  local x, y, r, c = limbs(a), limbs(b), {}, 0
  for k = 1, math.max(#x, #y) do
    local v = (x[k] or 0) + (y[k] or 0) + c
    if v >= 10000000 then r[k] = v - 10000000; c = 1 else r[k] = v; c = 0 end
  end
  if c > 0 then r[#r + 1] = c end
  return text(r)
end
local function sub(a, b) -- a >= b
  local x, y, r, c = limbs(a), limbs(b), {}, 0
  for k = 1, #x do
    local v = x[k] - (y[k] or 0) - c
    if v < 0 then r[k] = v + 10000000; c = 1 else r[k] = v; c = 0 end
  end
  return text(r)
end
local function cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end

local function rkey(id) return P .. 'r:' .. id end
local function who(agent) return #agent .. ':' .. agent end
local function akey(agent) return P .. 'a:' .. who(agent) end
local function rows(agent, asset) return P .. 'wl:' .. who(agent) .. ':' .. asset end
local function wkey(agent, asset, sec) return P .. 'w:' .. who(agent) .. ':' .. asset .. '#' .. sec end
local function tkey(agent, asset, sec) return P .. 'wt:' .. who(agent) .. ':' .. asset .. '#' .. sec end

-- Apply a change of one reservation to every window row that counts it.
local function adjust(id, agent, asset, delta, sign, count_delta, drop)
  for _, a in ipairs({asset, ''}) do
    for _, sec in ipairs(redis.call('SMEMBERS', rows(agent, a))) do
      local w, t = wkey(agent, a, sec), tkey(agent, a, sec)
      if redis.call('ZSCORE', w, id) then
        if a ~= '' and delta ~= '0' then
          local total = redis.call('HGET', t, 'total')
          redis.call('HSET', t, 'total', sign > 0 and add(total, delta) or sub(total, delta))
        end
        if count_delta ~= 0 then redis.call('HINCRBY', t, 'count', count_delta) end
        if drop then redis.call('ZREM', w, id) end
      end
    end
  end
end

local function release(id, reason, now)
  local r = rkey(id)
  local f = redis.call('HMGET', r, 'agent', 'asset', 'amount', 'actions')
  adjust(id, f[1], f[2], f[3], -1, -tonumber(f[4]), true)
  redis.call('HSET', r, 'state', 'released', 'amount', '0', 'reason', reason, 'updated_at', now)
  redis.call('HINCRBY', r, 'v', 1)
  redis.call('ZREM', P .. 'unsigned', id)
  redis.call('ZREM', P .. 'signed', id)
end

local function expire(now)
  local ids = redis.call('ZRANGEBYSCORE', P .. 'unsigned', '-inf', now)
  local out = {}
  for _, id in ipairs(ids) do
    release(id, 'expired before it was signed', now)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGETALL', rkey(id))
  end
  return out
end

-- The window row brought up to now (built from the agent's reservations on first use). The row
-- is shared, so it is moved for good only up to the server's clock: a caller whose clock runs
-- ahead sees the spends its `now` leaves behind subtracted for its own check, but they stay in
-- the row for every other caller (its `now` never forgets spends for them).
local server = redis.call('TIME')
local server_now = tonumber(server[1]) + tonumber(server[2]) / 1000000
local function rolled(agent, asset, sec, now)
  local w, t = wkey(agent, asset, sec), tkey(agent, asset, sec)
  local mine = tonumber(now) - tonumber(sec)
  local boundary = string.format('%.17g', math.min(mine, server_now - tonumber(sec)))
  local total, count
  if redis.call('SADD', rows(agent, asset), sec) == 1 then
    total, count = '0', 0
    local ids = redis.call('ZRANGEBYSCORE', akey(agent), '(' .. boundary, '+inf', 'WITHSCORES')
    for k = 1, #ids, 2 do
      local f = redis.call('HMGET', rkey(ids[k]), 'state', 'asset', 'amount', 'actions')
      if f[1] ~= 'released' and (asset == '' or f[2] == asset) then
        redis.call('ZADD', w, ids[k + 1], ids[k])
        if asset ~= '' then total = add(total, f[3]) end
        count = count + tonumber(f[4])
      end
    end
    redis.call('HSET', t, 'total', total, 'count', count)
  else
    total, count = redis.call('HGET', t, 'total'), tonumber(redis.call('HGET', t, 'count'))
    local leaving = redis.call('ZRANGEBYSCORE', w, '-inf', boundary)
    if #leaving > 0 then
      for _, id in ipairs(leaving) do
        local f = redis.call('HMGET', rkey(id), 'amount', 'actions')
        if asset ~= '' then total = sub(total, f[1]) end
        count = count - tonumber(f[2])
      end
      redis.call('ZREMRANGEBYSCORE', w, '-inf', boundary)
      redis.call('HSET', t, 'total', total, 'count', count)
    end
  end
  if mine > tonumber(boundary) then -- ahead of the server: this caller's view only
    local ahead = redis.call('ZRANGEBYSCORE', w, '(' .. boundary, string.format('%.17g', mine))
    for _, id in ipairs(ahead) do
      local f = redis.call('HMGET', rkey(id), 'amount', 'actions')
      if asset ~= '' then total = sub(total, f[1]) end
      count = count - tonumber(f[2])
    end
  end
  return w, total, count
end

local function main()
if op == 'claim' then -- the used-attestation record: ARGV[3] key, ARGV[4] unix expiry or ''
  local done
  if ARGV[4] == '' then
    done = redis.call('SET', P .. 'used:' .. ARGV[3], '1', 'NX')
  else
    done = redis.call('SET', P .. 'used:' .. ARGV[3], '1', 'NX', 'EXAT', ARGV[4])
  end
  return {done and 'claimed' or 'used'}
end

if op == 'reserve' then
  local id, agent, asset, amount = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  local recipient, expires_at, now, actions = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
  local r = rkey(id)
  if redis.call('EXISTS', r) == 1 then return {'existing', redis.call('HGETALL', r)} end
  if ARGV[11] ~= '' and cmp(amount, ARGV[11]) > 0 then return {'per_tx'} end
  expire(now)
  local i = 13
  for k = 1, tonumber(ARGV[12]) do
    local sec, max = ARGV[i], ARGV[i + 1]
    i = i + 2
    local w, total = rolled(agent, asset, sec, now)
    if cmp(add(total, amount), max) > 0 then return {'window', k, total, w} end
  end
  local nrate = tonumber(ARGV[i])
  i = i + 1
  for k = 1, nrate do
    local sec, max = ARGV[i], tonumber(ARGV[i + 1])
    i = i + 2
    if actions == '1' then -- a fee held next to an action is not another action
      local w, _, count = rolled(agent, '', sec, now)
      if count + 1 > max then return {'rate', k, tostring(count), w} end
    end
  end
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('HSET', r, 'agent', agent, 'asset', asset, 'amount', amount, 'reserved', amount,
    'state', 'reserved', 'created_at', now, 'expires_at', expires_at, 'updated_at', now,
    'actions', actions, 'seq', seq, 'v', 0)
  if recipient ~= '' then redis.call('HSET', r, 'recipient', string.sub(recipient, 2)) end
  redis.call('ZADD', akey(agent), now, id)
  redis.call('ZADD', P .. 'unsigned', expires_at, id)
  for _, a in ipairs({asset, ''}) do
    for _, sec in ipairs(redis.call('SMEMBERS', rows(agent, a))) do
      local t = tkey(agent, a, sec)
      redis.call('ZADD', wkey(agent, a, sec), now, id)
      if a ~= '' then redis.call('HSET', t, 'total', add(redis.call('HGET', t, 'total'), amount)) end
      redis.call('HINCRBY', t, 'count', tonumber(actions))
    end
  end
  return {'ok', redis.call('HGETALL', r)}
end

if op == 'expire' then
  return expire(ARGV[3])
end

-- The other operations were checked by the caller against version ARGV[4] of the reservation;
-- if it changed meanwhile, the caller reloads and checks again.
local id = ARGV[3]
local r = rkey(id)
if redis.call('HGET', r, 'v') ~= ARGV[4] then return {'retry'} end

if op == 'bind' then
  local task_id, expires_at, now = ARGV[5], ARGV[6], ARGV[7]
  local other = redis.call('GET', P .. 'task:' .. task_id)
  if other and other ~= id then return {'replayed', other} end
  redis.call('SET', P .. 'task:' .. task_id, id)
  redis.call('HSET', r, 'task_id', task_id, 'expires_at', expires_at, 'updated_at', now)
  redis.call('ZADD', P .. 'unsigned', expires_at, id)
elseif op == 'mark_signed' then
  local reference, now = ARGV[5], ARGV[6]
  redis.call('HSET', r, 'state', 'signed', 'reference', reference, 'updated_at', now)
  redis.call('ZREM', P .. 'unsigned', id)
  redis.call('ZADD', P .. 'signed', redis.call('HGET', r, 'seq'), id)
elseif op == 'commit' then
  local outcome, final, now = ARGV[5], ARGV[6], ARGV[7]
  local f = redis.call('HMGET', r, 'agent', 'asset', 'amount')
  adjust(id, f[1], f[2], sub(f[3], final), -1, 0, false)
  redis.call('HSET', r, 'state', 'committed', 'amount', final, 'outcome', outcome, 'updated_at', now)
  redis.call('ZREM', P .. 'unsigned', id)
  redis.call('ZREM', P .. 'signed', id)
elseif op == 'release' then
  release(id, ARGV[5], ARGV[6])
  return {'ok', redis.call('HGETALL', r)}
else
  return redis.error_reply('unknown operation')
end
redis.call('HINCRBY', r, 'v', 1)
return {'ok', redis.call('HGETALL', r)}
end

local answer = main()
if answer.err then return answer end
return {tostring(wseq), answer}
