-- Changes a group's member set atomically. KEYS[1] = the set; ARGV[1] = op
-- ("create" | "add" | "remove"), ARGV[2..] = uids. SADD/SREM go in chunks: Lua's unpack has
-- a stack limit far below the largest groups.
-- Returns {"0"} when the group is missing (or, for create, exists), else {"1", members...}.
local op = ARGV[1]
local exists = redis.call('EXISTS', KEYS[1]) == 1
if (op == 'create' and exists) or (op ~= 'create' and not exists) then
  return {'0'}
end
local cmd = (op == 'remove') and 'SREM' or 'SADD'
local chunk = {}
for i = 2, #ARGV do
  chunk[#chunk + 1] = ARGV[i]
  if #chunk == 1000 or i == #ARGV then
    redis.call(cmd, KEYS[1], unpack(chunk))
    chunk = {}
  end
end
local members = redis.call('SMEMBERS', KEYS[1])
table.insert(members, 1, '1')
return members
