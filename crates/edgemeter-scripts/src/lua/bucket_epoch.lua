
local function bucket_epoch(key, candidate)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  local held = redis.call('GET', key)
  if held then
    local epoch, held_run = string.match(held, '^(%d+):(%x+)$')
    if epoch and held_run == run then
      return epoch
    end
  end
  redis.call('SET', key, candidate .. ':' .. run)
  return candidate
end
