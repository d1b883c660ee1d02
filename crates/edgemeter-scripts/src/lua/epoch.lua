
return bucket_epoch(KEYS[1], ARGV[1])
