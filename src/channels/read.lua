-- Reads one channel's history with its epoch and newest offset, in one step.
--
-- KEYS[1] the channel's meta hash, KEYS[2] its history stream.
-- ARGV[1] mode: "after" (every entry after offset ARGV[2]), "newest" (the newest ARGV[3]),
-- or "page" (the newest ARGV[3] before offset ARGV[2], 0 meaning none);
-- ARGV[4] a fresh epoch, stored when the channel has none yet (a subscriber must get the
-- epoch the next publication will carry; not in "page" mode, which only reads).
-- Returns {epoch, newest offset, json, at, json, at, ...}: "after" oldest first, the others
-- newest first.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  if ARGV[1] == 'page' then
    epoch = ''
  else
    redis.call('HSET', KEYS[1], 'epoch', ARGV[4])
    redis.call('DEL', KEYS[2])
    epoch = ARGV[4]
  end
end
local latest = redis.call('HGET', KEYS[1], 'offset') or '0'
local n = tonumber(ARGV[3])
local entries
if ARGV[1] == 'after' then
  entries = redis.call('XRANGE', KEYS[2], (tonumber(ARGV[2]) + 1) .. '-0', '+')
elseif ARGV[1] == 'newest' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
else
  local before = tonumber(ARGV[2])
  if before == 0 then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
  elseif before <= 1 then
    entries = {}
  else
    entries = redis.call('XREVRANGE', KEYS[2], (before - 1) .. '-0', '-', 'COUNT', n)
  end
end
local out = {epoch, latest}
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'p' then out[#out + 1] = fields[i + 1] end
  end
  for i = 1, #fields, 2 do
    if fields[i] == 't' then out[#out + 1] = fields[i + 1] end
  end
end
return out
