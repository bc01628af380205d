-- Publishes on one channel, atomically: allocates the next offset, appends the publication
-- to the bounded history, remembers the (publisher, MsgID) key, and sends the publication on
-- the channel's feed. One script, so the feed carries publications in offset order whichever
-- node published them, and a re-send never gets a second offset.
--
-- KEYS[1] the channel's meta hash (epoch, offset), KEYS[2] its history stream (entry id
-- `<offset>-0`, fields p = publication JSON, t = accepted at, ms), KEYS[3] the idempotency
-- key (absent when the publish has no MsgID). All carry the hash tag {ch:<name>}.
-- ARGV[1] a fresh epoch, used when the channel has none (never published, or its history
-- was lost: Redis flushed), ARGV[2] history size, ARGV[3] history age bound (ms),
-- ARGV[4] idempotency window (s), ARGV[5] PUBLISH, or SPUBLISH on Redis Cluster,
-- ARGV[6] the feed channel, ARGV[7] accepted at (ms), ARGV[8] the publication JSON up to
-- its offset, ARGV[9] the JSON after its epoch.
-- Returns {epoch, offset, "1" for a re-send else "0"}.
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  -- A history whose epoch is gone belongs to no epoch: start over.
  redis.call('DEL', KEYS[2])
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if KEYS[3] then
  local first = redis.call('GET', KEYS[3])
  if first then
    return {epoch, first, '1'}
  end
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local json = ARGV[8] .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[9]
if tonumber(ARGV[2]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-0', 'p', json, 't', ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
else
  redis.call('DEL', KEYS[2])
end
if KEYS[3] then
  redis.call('SET', KEYS[3], offset, 'EX', ARGV[4])
end
redis.call(ARGV[5], ARGV[6], 'P' .. json)
return {epoch, tostring(offset), '0'}
