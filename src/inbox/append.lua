-- Appends a batch of events, each to one user's inbox, and publishes each on that user's
-- channel, atomically. Batching amortises the script call and the round trip over every
-- event a node has queued while the previous batch was in flight (a group commit).
--
-- ARGV[1] inbox max length, ARGV[2] inbox max age (s), ARGV[3] idempotency window (s),
-- ARGV[4] the publish command: PUBLISH, or SPUBLISH on Redis Cluster (where every key and
-- channel of one call must share a hash slot: the caller batches per slot and sends the
-- sender's echo, which lives in another slot, itself).
-- ARGV[5] the call log's queue stream, "" when events carry no log entry (only ever set on
-- one Redis, never on a cluster, where the stream lives in another slot: so it is named
-- here rather than declared in KEYS).
-- ARGV[6] = J, the number of distinct event JSONs (without Seq) in this call, and
-- ARGV[7..6+J] = those JSONs: a group message's recipients share one copy, so a batch for
-- a large group carries its body once, not once per member.
-- Then the events in runs: consecutive events that share everything but their receiver (a
-- group message's recipients) share one run, so a member costs its keys and nothing else.
-- Per run, twelve ARGV from b = 6 + J on, then two per key it sets, five per call-log row
-- and two per age registration:
--   the run's event count, index of its JSON (1..J), SentAt (ms), "1" to check the
--   idempotency key ("2": and remember the Seq it got, for re-sends of 1:1 messages),
--   channel for the acting user's other sockets ("" for none), socket to skip there, and
--   the event's call-log record (JSON without Seq; "" for none; only in runs of one event):
--   added to the queue stream with the Seq it got (field s) in the same step, so a stored
--   event is never missing from the call log and costs no second round trip; and "1" when
--   the acting user has other sockets on the acting node ("0": the live copy is published
--   only if another node subscribes to the user's channel, since the acting node, which
--   does, has no socket to give it to); the riders of a 1:1 message (`inbox::Rider`, only
--   in runs of one event): a member whose presence in a set refuses the event ("" for no
--   such check: the receiver's block list holding the sender), and how many keys are set,
--   unless they exist, with the stored event (the sender's receipt marker, the message's
--   entry in the lifecycle index); how many call-log table rows the event writes (only in
--   runs of one event, one Redis: `storage::table::CarriedRows`, the table's rows in this
--   Redis, so a message is logged in the step that stores it, without the queue); and how
--   many partitions it registers in the table's retention index. Then each set key's value
--   and lifetime (s); each row's sort key, attributes JSON (without the Seq), the attribute
--   the Seq goes in ("" for none), and its version attribute and version ("" for a plain
--   row: a versioned row is written unless the stored one has a larger integer version, as
--   `RedisTable::put_if_newer`); each registration's score and partition (`ZADD LT`).
-- Per event, in order across runs, its user's seq counter (`wc:{uid}:seq`) and inbox
-- stream, then, only in a run that checks idempotency (flag not "0"), its idempotency key
-- (one user's keys share a hash slot): a group message's member costs two keys; then the
-- refusing set, where the run has one, the keys it sets, each row's index (sorted set) and
-- rows (hash), and the retention index where it registers partitions.
-- All are declared, not named inside the script: on Redis Cluster that lets a shard
-- answer ASK/TRYAGAIN for a slot being migrated before the script runs, instead of the
-- script failing half-way on a key that already moved. The user's channel `wc:{uid}:ch`
-- is named after the seq counter.
-- Returns one value per event: its Seq, or, for a duplicate, the idempotency key's value
-- ("SentAt" or "SentAt:Seq" of the first send) as a string, or {'refused'} when its refusing
-- set holds its member (nothing written), or, where the event could not be
-- stored because of its receiver's keys (a key of the wrong type, a Seq counter that is not
-- a number), {'error', message}: one receiver's broken key fails that receiver only, not the
-- events after it in the batch (Redis does not undo a script's earlier commands when a later
-- one fails, so aborting would leave the batch half-done with no way to tell which half).
-- Any other error (OOM, READONLY after a failover, ...) fails the whole call, as before.
local out = {}
local max_len, max_age, window, publish, log_stream = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]

-- How far the current event got: whether this call created its idempotency key, and its Seq
-- once it is in the inbox.
local created_key, stored_seq

-- One call-log row: KEYS[k], KEYS[k + 1] its partition's index and rows, ARGV[a..a + 4] as
-- described above.
local function put_row(k, a, seq_text)
  local sk, attrs, seq_attr, version_attr = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if seq_attr ~= '' then
    local field = '"' .. seq_attr .. '":' .. seq_text
    if attrs == '{}' then
      attrs = '{' .. field .. '}'
    else
      attrs = string.sub(attrs, 1, -2) .. ',' .. field .. '}'
    end
  end
  if version_attr ~= '' then
    local stored = redis.call('HGET', KEYS[k + 1], sk)
    if stored then
      local ok, doc = pcall(cjson.decode, stored)
      local old = ok and type(doc) == 'table' and doc[version_attr] or nil
      if type(old) == 'number' and old == math.floor(old) and old > tonumber(ARGV[a + 4]) then
        return
      end
    end
  end
  redis.call('ZADD', KEYS[k], 0, sk)
  redis.call('HSET', KEYS[k + 1], sk, attrs)
end

local function append_one(seq_key, inbox, dedupe, flag, sent_at, json, echo, skip, log, others_here,
                          refuse_set, refuse_member, k_sets, a_sets, n_sets, n_rows, n_ages)
  if refuse_set and redis.call('SISMEMBER', refuse_set, refuse_member) == 1 then
    return { 'refused' }
  end
  if flag ~= '0' then
    -- One command: sets the key unless it exists, and returns the earlier value if it did.
    local first = redis.call('SET', dedupe, sent_at, 'NX', 'EX', window, 'GET')
    if first then
      return first
    end
    created_key = true
  end
  local seq = redis.call('INCR', seq_key)
  -- Lua turns a number into text with sprintf; once per event, not once per use.
  local seq_text = tostring(seq)
  if flag == '2' then
    -- A re-send learns which Seq the first send got (the call log records it).
    redis.call('SET', dedupe, sent_at .. ':' .. seq_text, 'XX', 'KEEPTTL')
  end
  for j = 1, n_sets do
    -- Before the publish: whoever is told of the event finds them.
    redis.call('SET', KEYS[k_sets + j], ARGV[a_sets + 2 * j - 1], 'EX', ARGV[a_sets + 2 * j], 'NX')
  end
  if n_rows > 0 then
    -- Before the inbox entry, as the queue entry below.
    local k_rows, a_rows = k_sets + n_sets, a_sets + 2 * n_sets
    for r = 0, n_rows - 1 do
      put_row(k_rows + 1 + 2 * r, a_rows + 1 + 5 * r, seq_text)
    end
    if n_ages > 0 then
      -- After the rows, never before (see `RedisTable::trim_partition`).
      local registrations, a_ages = {}, a_rows + 5 * n_rows
      for j = 1, 2 * n_ages do
        registrations[j] = ARGV[a_ages + j]
      end
      redis.call('ZADD', KEYS[k_rows + 2 * n_rows + 1], 'LT', unpack(registrations))
    end
  end
  if log ~= '' then
    -- Before the inbox entry: if this fails, the event is not stored either (and the client
    -- retries). The reverse (a receiver's inbox key of the wrong type after the log entry
    -- went in) leaves a log row for an event nobody got: only for a corrupted key, and an
    -- audit log that says too much beats one that misses a delivered message.
    redis.call('XADD', log_stream, '*', 'r', log, 's', seq_text)
  end
  redis.call('XADD', inbox, 'MAXLEN', max_len, seq_text .. '-0', 'e', json)
  stored_seq = seq
  redis.call('EXPIRE', inbox, max_age)
  redis.call(publish, string.sub(seq_key, 1, -4) .. 'ch', 'S' .. seq_text .. '\n' .. json)
  if echo ~= '' and (others_here == '1' or redis.call('PUBSUB', 'NUMSUB', echo)[2] > 1) then
    -- The live copy for the sender's other tabs rides in the same round trip.
    redis.call(publish, echo, 'L' .. skip .. '\n' .. json)
  end
  return seq
end

local a = 6 + tonumber(ARGV[6])
local i = 0 -- events done
local k = 0 -- keys used
while k < #KEYS do
  local count, json, sent_at = tonumber(ARGV[a + 1]), ARGV[6 + tonumber(ARGV[a + 2])], ARGV[a + 3]
  local flag, echo, skip, log, others_here = ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local refuse_member, n_sets = ARGV[a + 9], tonumber(ARGV[a + 10])
  local n_rows, n_ages = tonumber(ARGV[a + 11]), tonumber(ARGV[a + 12])
  local dedupe_at = (flag ~= '0') and 3 or nil
  local refuse_at = (refuse_member ~= '') and (dedupe_at or 2) + 1 or nil
  local sets_after = refuse_at or dedupe_at or 2
  local keys_per_event = sets_after + n_sets + 2 * n_rows + ((n_ages > 0) and 1 or 0)
  for _ = 1, count do
    local dedupe = dedupe_at and KEYS[k + dedupe_at] or nil
    local refuse_set = refuse_at and KEYS[k + refuse_at] or nil
    created_key, stored_seq = false, nil
    local ok, result = pcall(append_one, KEYS[k + 1], KEYS[k + 2], dedupe, flag,
      sent_at, json, echo, skip, log, others_here, refuse_set, refuse_member,
      k + sets_after, a + 12, n_sets, n_rows, n_ages)
    if ok then
      out[i + 1] = result
    elseif stored_seq then
      -- In the inbox already: delivered by replay (or the next live event's gap check).
      out[i + 1] = stored_seq
    else
      local message = type(result) == 'table' and result.err or tostring(result)
      if not (string.find(message, '^WRONGTYPE') or string.find(message, '^ERR')) then
        error(result, 0)
      end
      if created_key then
        -- Not stored: a re-send must not be taken for a duplicate.
        redis.call('DEL', dedupe)
      end
      out[i + 1] = { 'error', message }
    end
    i = i + 1
    k = k + keys_per_event
  end
  a = a + 12 + 2 * n_sets + 5 * n_rows + 2 * n_ages
end
return out
