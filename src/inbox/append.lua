-- Appends one event to a user's inbox and publishes it on the user's channel, atomically.
-- KEYS[1] seq counter, KEYS[2] inbox stream, KEYS[3] idempotency key (all in the user's slot)
-- ARGV[1] channel, ARGV[2] event JSON (without Seq), ARGV[3] SentAt (ms),
-- ARGV[4] inbox max length, ARGV[5] inbox max age (s), ARGV[6] idempotency window (s),
-- ARGV[7] "1" when KEYS[3] is to be checked,
-- ARGV[8] channel of the acting user's other sockets ("" for none), ARGV[9] socket to skip there
-- Returns {0, first SentAt} for a duplicate, else {Seq, SentAt}.
if ARGV[7] == '1' then
  -- One command: sets the key unless it exists, and returns the earlier value if it did.
  local first = redis.call('SET', KEYS[3], ARGV[3], 'NX', 'EX', ARGV[6], 'GET')
  if first then
    return {0, tonumber(first)}
  end
end
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], seq .. '-0', 'e', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[1], 'S' .. seq .. '\n' .. ARGV[2])
if ARGV[8] ~= '' then
  -- The live copy for the sender's other tabs rides in the same round trip.
  redis.call('PUBLISH', ARGV[8], 'L' .. ARGV[9] .. '\n' .. ARGV[2])
end
return {seq, tonumber(ARGV[3])}
