-- Records a receipt. KEYS[1] = hash with the recipient count (field n), KEYS[2] = set of
-- readers who displayed the message, KEYS[3] (1:1 only) = the marker noted when the message
-- was sent to this reader (all in the sender's slot). ARGV[1] reader, ARGV[2] kind, ARGV[3]
-- count to assume when none was noted, ARGV[4] TTL (s), ARGV[5] (1:1) how long KEYS[3] is
-- kept once the reader has displayed the message (s).
-- Returns how many recipients have not displayed it (never below zero), or -1, having
-- recorded nothing, when KEYS[3] is given and absent (not sent to this reader).
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 0 then
  return -1
end
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or ARGV[3])
if ARGV[2] == 'display' then
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
  -- Displayed: later receipts (a late delivery, a repeat) are rare, so the marker need not
  -- outlive the idempotency window; only never-displayed messages keep it for the inbox age.
  if KEYS[3] and redis.call('TTL', KEYS[3]) > tonumber(ARGV[5]) then
    redis.call('EXPIRE', KEYS[3], ARGV[5])
  end
end
local unread = n - redis.call('SCARD', KEYS[2])
if unread < 0 then
  unread = 0
end
return unread
