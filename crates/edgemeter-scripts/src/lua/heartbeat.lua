
local epoch = bucket_epoch(KEYS[1], ARGV[1])
if ARGV[4] ~= '0' then
  local holder = redis.call('GET', KEYS[4])
  if holder and holder ~= ARGV[4] then
    return { epoch, 1 }
  end
  redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
end
redis.call('HSET', KEYS[3], 'last_heartbeat_ms', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[2])
return { epoch, 0 }
