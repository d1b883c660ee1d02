
local recent_max = tonumber(ARGV[2])
local stamp = ARGV[3]
local state_count = tonumber(ARGV[4])
local edge_count = tonumber(ARGV[5])
local group_count = tonumber(ARGV[6])
local count = tonumber(ARGV[7])
local epoch = bucket_epoch(KEYS[1], ARGV[1])
local group_first = 7 + edge_count
local tuple_first = group_first + group_count * 6
local key_first = 3 + state_count * 2 + edge_count
local groups = {}
local order = {}
for number = 1, group_count do
  local base = group_first + (number - 1) * 6
  local group = { state = tonumber(ARGV[base + 1]), edge = tonumber(ARGV[base + 2]),
    node = ARGV[base + 3], received = ARGV[base + 4], count = tonumber(ARGV[base + 5]),
    sum = ARGV[base + 6], fresh = 0 }
  groups[tostring(number)] = group
  order[number] = group
end
local inserted = 0
local recent = {}
local existing = nil
local conflicts = {}
local stored_values = {}
for index = 0, count - 1 do
  local base = tuple_first + index * 3
  local group = groups[ARGV[base + 2]]
  local key = KEYS[key_first + 1 + index]
  if redis.call('SET', key, ARGV[base + 1], 'NX') then
    group.fresh = group.fresh + 1
    inserted = inserted + 1
    recent[inserted] = stamp .. ':' .. ARGV[base + 3] .. ':' .. key
  else
    existing = existing or {}
    existing[index] = true
    local stored = redis.call('GET', key)
    local ok, old = pcall(cjson.decode, stored)
    local new = cjson.decode(ARGV[base + 1])
    if not ok or type(old) ~= 'table' or old.average_w ~= new.average_w
        or old.samples ~= new.samples then
      conflicts[#conflicts + 1] = index
      stored_values[#stored_values + 1] = stored
    end
  end
end
if existing then
  for _, group in ipairs(order) do
    if group.fresh < group.count then group.sum = 0 end
  end
  for index = 0, count - 1 do
    local base = tuple_first + index * 3
    local group = groups[ARGV[base + 2]]
    if group.fresh < group.count and not existing[index] then
      group.sum = group.sum + cjson.decode(ARGV[base + 1]).average_w
    end
  end
end
local states = {}
local edges = {}
for _, group in ipairs(order) do
  if group.fresh > 0 then
    local totals = states[group.state]
    if not totals then
      totals = { tuples = 0, sum = 0, households = {} }
      states[group.state] = totals
    end
    totals.tuples = totals.tuples + group.fresh
    totals.sum = totals.sum + tonumber(group.sum)
    totals.households[#totals.households + 1] = group.node
    local edge = edges[group.edge]
    if not edge then
      edge = { tuples = 0, last = 0 }
      edges[group.edge] = edge
    end
    edge.tuples = edge.tuples + group.fresh
    edge.last = math.max(edge.last, tonumber(group.received))
  end
end
for number = 1, state_count do
  local totals = states[number]
  if totals then
    local state_key = KEYS[2 + number * 2]
    redis.call('HINCRBY', state_key, 'tuples', totals.tuples)
    redis.call('HINCRBYFLOAT', state_key, 'average_sum_w', string.format('%.17g', totals.sum))
    redis.call('SADD', KEYS[3 + number * 2], unpack(totals.households))
  end
end
for number = 1, edge_count do
  local edge = edges[number]
  if edge then
    local edge_key = KEYS[3 + state_count * 2 + number]
    redis.call('SADD', KEYS[3], ARGV[7 + number])
    redis.call('HINCRBY', edge_key, 'tuples', edge.tuples)
    local last = tonumber(redis.call('HGET', edge_key, 'last_tuple_ms') or '0')
    if edge.last > last then
      redis.call('HSET', edge_key, 'last_tuple_ms', string.format('%d', edge.last))
    end
  end
end
if #recent > 0 then
  redis.call('LPUSH', KEYS[2], unpack(recent))
  redis.call('LTRIM', KEYS[2], 0, recent_max - 1)
end
return { inserted, epoch, conflicts, stored_values }
