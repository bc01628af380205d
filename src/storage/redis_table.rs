//! [`SortedTable`] in Redis.
//!
//! Per partition `pk`, two keys sharing the hash tag `{log:<pk>}` (one Redis Cluster slot,
//! so scripts may touch both):
//! - `wc:{log:<pk>}:idx`  sorted set, every score 0, members = sort keys: equal scores make
//!   Redis order members bytewise, which is the [`Row`] order, and BYLEX ranges query it
//! - `wc:{log:<pk>}:rows` hash sort key → attributes JSON
//!
//! Every write and every query is a Lua script over both keys, so the index and the rows
//! never disagree. A write covers many partitions in one script call (all of a batch on one
//! Redis; per hash slot on Redis Cluster): the call log's drain writes five rows in five
//! partitions per 1:1 message, and a call per partition cost more than the writes in it.
//! `put_if_newer` reads the stored version from the stored JSON (cjson): versions are
//! compared as Lua numbers (doubles), exact up to 2^53.
//!
//! Retention (Redis keeps the call log for a bounded time, see `calllog::retention`): one more
//! key, `wc:{log-retention}:ages`, a sorted set of the partitions that hold time-ordered rows
//! (`c#…` and `u#…`, sort keys `t#<SentAt:13>…`), each scored by a lower bound of its oldest
//! such row's SentAt. `put_rows` registers a partition after writing its rows (`ZADD LT`,
//! skipped while this node registered it recently, see [`AgeCache`]), and [`RedisTable::trim`]
//! visits only the partitions scored below the bound, so trimming never scans the keyspace.
//! In a partition the old rows are one lexicographic range (`[t#` … `(t#<bound>`), removed a
//! few hundred per script call with everything that points at them: the receipt rows of a
//! trimmed message (`c#`), and the user's conversation summary (`v#<uid>` / `p:…`) when the
//! trimmed copy (`u#`) was the conversation's latest event.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{ClientLike, HashesInterface, KeysInterface, SortedSetsInterface},
    types::{scripts::Script, Expiration, SetOptions, Value},
};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::Map;

use super::table::{
    last_of_each_key, CarriedRow, CarriedRows, Order, Row, RowsToWrite, SkRange, SortedTable,
    SEQ_FROM_APPEND,
};
use crate::storage::{redis::unavailable, StoreError};

/// Rows per script call: bounds how long one call holds Redis (a script blocks every other
/// client: 100 rows took 1–2 ms on the shared bench machine), while still one call for a
/// 10-message batch.
const ROWS_PER_CALL: usize = 50;
/// Reads in flight at once for one `get_rows`.
const CALLS_IN_FLIGHT: usize = 8;
/// Write scripts in flight at once for one write: one, so the inbox appends of live
/// messages run between them. With 8 at once a drain batch's calls reached Redis back to
/// back and held it for tens of milliseconds, which every sender's ack waited out.
const WRITE_CALLS_IN_FLIGHT: usize = 1;
/// Conditional rows per script call (each also reads and decodes the stored row).
const VERSIONED_ROWS_PER_CALL: usize = 50;

/// The partitions holding time-ordered rows, scored by their oldest row's SentAt (unix ms).
const AGES_KEY: &str = "wc:{log-retention}:ages";
/// Held by the node running the periodic trim, so nodes do not all trim at once.
const LEASE_KEY: &str = "wc:{log-retention}:lease";
/// Rows (and their receipts) one trim script removes at most: a few hundred deletions keep
/// each call well under a millisecond of Redis time.
const TRIM_ROWS_PER_CALL: usize = 200;
/// Partitions read from the ages index per page, and trimmed at once.
const PARTITIONS_PER_PAGE: usize = 100;
/// Partitions one trim visits at most; the rest wait for the next trim. Bounds how long a
/// trim runs (and the set of visited keys it keeps) after a long time without one.
const PARTITIONS_PER_TRIM: usize = 50_000;
const TRIMS_IN_FLIGHT: usize = 4;
/// Members per registering `ZADD`.
const AGES_PER_CALL: usize = 500;
/// How long a registration this node made is trusted without registering again (see
/// [`AgeCache`]). Well under the shortest retention (one day), with hours to spare for clocks
/// that disagree between nodes.
const AGE_CACHE_HORIZON_MS: i64 = 12 * 3600 * 1000;
/// Registrations remembered at most (~100 bytes each).
const AGE_CACHE_CAP: usize = 100_000;

/// Writes rows of many partitions in one call. KEYS: idx, rows of each partition in turn.
/// ARGV, per partition in KEYS order: its row count n, then n × (sk, attrs); later pairs win.
/// Returns the rows written.
const PUT_LUA: &str = r"
local a = 1
for k = 1, #KEYS, 2 do
  local n = tonumber(ARGV[a])
  a = a + 1
  for _ = 1, n do
    redis.call('ZADD', KEYS[k], 0, ARGV[a])
    redis.call('HSET', KEYS[k + 1], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
end
return (#ARGV - #KEYS / 2) / 2
";

/// Conditional writes of many rows in one call. KEYS: idx, rows of each row's partition in
/// turn. ARGV, four per row in KEYS order: sk, attrs, version attribute name, new version (''
/// when the row has no integer version). Same rule as the embedded table: a stored integer
/// version wins over a larger one and over a row without one. Returns the rows written.
const PUT_IF_NEWER_LUA: &str = r"
local written = 0
for k = 1, #KEYS, 2 do
  local a = 2 * k - 1
  local stale = false
  local stored = redis.call('HGET', KEYS[k + 1], ARGV[a])
  if stored then
    local ok, doc = pcall(cjson.decode, stored)
    local old = ok and type(doc) == 'table' and doc[ARGV[a + 2]] or nil
    if type(old) == 'number' and old == math.floor(old) then
      local new = tonumber(ARGV[a + 3])
      stale = new == nil or old > new
    end
  end
  if not stale then
    redis.call('ZADD', KEYS[k], 0, ARGV[a])
    redis.call('HSET', KEYS[k + 1], ARGV[a], ARGV[a + 1])
    written = written + 1
  end
end
return written
";

/// KEYS: idx, rows. ARGV: lex min, lex max, '1' for descending, limit.
/// Returns sk1, attrs1, sk2, attrs2, …
const QUERY_LUA: &str = r"
local sks
if ARGV[3] == '1' then
  sks = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[2], ARGV[1], 'LIMIT', 0, ARGV[4])
else
  sks = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[4])
end
local out = {}
for _, sk in ipairs(sks) do
  local attrs = redis.call('HGET', KEYS[2], sk)
  if attrs then
    out[#out + 1] = sk
    out[#out + 1] = attrs
  end
end
return out
";

/// KEYS: ages. ARGV: visit below (unix ms, exclusive), limit. The partitions to visit.
const AGES_PAGE_LUA: &str = r"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
";

/// KEYS: ages. ARGV: score1, pk1, score2, pk2, … A partition's score only ever goes down here
/// (LT): it stays a lower bound of its oldest row while other rows arrive.
const AGES_REGISTER_LUA: &str = r"
return redis.call('ZADD', KEYS[1], 'LT', unpack(ARGV))
";

/// KEYS: idx, rows. ARGV: bound sort key `t#<SentAt:13>` (rows below it go), limit, `c` for a
/// conversation partition (a trimmed message takes its receipt and lifecycle rows along) or `u` (a user's
/// copies: the conversations they belonged to are returned, to trim stale summaries).
/// Returns: rows looked at, rows deleted (receipts included), the oldest time-ordered sort
/// key left ('' when none), then the distinct conversations of trimmed copies.
const TRIM_LUA: &str = r"
local sks = redis.call('ZRANGEBYLEX', KEYS[1], '[t#', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local removed = 0
local convs = {}
local seen = {}
for _, sk in ipairs(sks) do
  local stored = redis.call('HGET', KEYS[2], sk)
  if stored then
    local ok, doc = pcall(cjson.decode, stored)
    if ok and type(doc) == 'table' then
      if ARGV[3] == 'c' then
        if doc['e'] == 'message' and type(doc['a']) == 'string' and type(doc['m']) == 'string' then
          local base = 'r#' .. doc['a'] .. '#' .. doc['m'] .. '#'
          removed = removed + redis.call('HDEL', KEYS[2], base .. 'delivery', base .. 'display')
          redis.call('ZREM', KEYS[1], base .. 'delivery', base .. 'display')
          -- Its lifecycle rows (calllog::lifecycle): found by MsgID, edits, delete, reactions.
          local m = doc['m']
          local owned = redis.call('ZRANGEBYLEX', KEYS[1], '[l#' .. m .. '\1', '(l#' .. m .. '\2')
          owned[#owned + 1] = 'k#' .. m
          owned[#owned + 1] = 'j#' .. m
          for _, row in ipairs(owned) do
            removed = removed + redis.call('HDEL', KEYS[2], row)
            redis.call('ZREM', KEYS[1], row)
          end
        end
      elseif type(doc['c']) == 'string' and not seen[doc['c']] then
        seen[doc['c']] = true
        convs[#convs + 1] = doc['c']
      end
    end
    removed = removed + redis.call('HDEL', KEYS[2], sk)
  end
end
if #sks > 0 then
  redis.call('ZREM', KEYS[1], unpack(sks))
end
local oldest = redis.call('ZRANGEBYLEX', KEYS[1], '[t#', '(t$', 'LIMIT', 0, 1)
local out = { tostring(#sks), tostring(removed), oldest[1] or '' }
for _, conv in ipairs(convs) do
  out[#out + 1] = conv
end
return out
";

/// KEYS: idx, rows of a `v#<uid>` partition. ARGV: bound (unix ms), conv1, conv2, … Deletes
/// the 1:1 summaries among them whose latest event is older than the bound (a newer event
/// would have replaced the summary). Group membership rows (`g:…`) are state, never trimmed.
/// Returns rows deleted.
const TRIM_SUMMARIES_LUA: &str = r"
local bound = tonumber(ARGV[1])
local removed = 0
for i = 2, #ARGV do
  local conv = ARGV[i]
  if string.sub(conv, 1, 2) == 'p:' then
    local stored = redis.call('HGET', KEYS[2], conv)
    if stored then
      local ok, doc = pcall(cjson.decode, stored)
      local at = ok and type(doc) == 'table' and doc['at'] or nil
      if type(at) == 'number' and at < bound then
        removed = removed + redis.call('HDEL', KEYS[2], conv)
        redis.call('ZREM', KEYS[1], conv)
      end
    end
  end
end
return removed
";

/// KEYS: idx. The oldest time-ordered sort key of the partition, if any.
const OLDEST_LUA: &str = r"
return redis.call('ZRANGEBYLEX', KEYS[1], '[t#', '(t$', 'LIMIT', 0, 1)
";

/// [`SortedTable`] over Redis (layout in the module doc).
pub struct RedisTable {
    pool: Pool,
    put: Script,
    put_if_newer: Script,
    query: Script,
    ages_page: Script,
    ages_register: Script,
    trim: Script,
    trim_summaries: Script,
    oldest: Script,
    registered: Mutex<AgeCache>,
}

/// The bounds of one trim, in unix ms (see `calllog::retention::bounds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimBounds {
    /// Partitions whose oldest row is older than this are visited.
    pub visit_below: i64,
    /// In a visited partition, rows older than this are deleted. Not below `visit_below`:
    /// a visit takes everything past the retention bound, so a busy partition is visited
    /// once per gap between the two rather than once per pass.
    pub remove_below: i64,
}

/// What one [`RedisTable::trim`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Partitions visited.
    pub partitions: u64,
    /// Rows deleted: events, their copies, receipts and stale summaries.
    pub rows: u64,
}

/// The partitions this node registered in the ages index lately, with the score it gave them.
///
/// Why skipping a registration is safe: the node wrote a row with SentAt `s` into the
/// partition and registered it with score `s`. That row stays until a trim removes it, which
/// no trim does before `s` is older than the retention (a day at least). Until then a trim
/// that visits the partition finds that row still there and keeps the partition registered
/// with a score ≤ `s`, so newer rows need no registration of their own. The cache trusts an
/// entry for [`AGE_CACHE_HORIZON_MS`] only, far inside that day.
#[derive(Debug, Default)]
pub struct AgeCache {
    scores: HashMap<String, i64>,
}

impl AgeCache {
    /// Whether rows with oldest SentAt `sent_at` in `pk` must be registered at `now` (ms).
    pub fn needs(&self, pk: &str, sent_at: i64, now: i64) -> bool {
        match self.scores.get(pk) {
            Some(&score) => score > sent_at || score < now - AGE_CACHE_HORIZON_MS,
            None => true,
        }
    }

    /// Records that `pk` was registered with score `sent_at`.
    pub fn remember(&mut self, pk: String, sent_at: i64, now: i64) {
        if self.scores.len() >= AGE_CACHE_CAP && !self.scores.contains_key(&pk) {
            self.scores
                .retain(|_, score| *score >= now - AGE_CACHE_HORIZON_MS);
            if self.scores.len() >= AGE_CACHE_CAP {
                self.scores.clear();
            }
        }
        self.scores.insert(pk, sent_at);
    }
}

/// The SentAt of a time-ordered sort key (`t#<SentAt:13>…`), `None` for any other key.
pub fn sent_at_of(sk: &str) -> Option<i64> {
    let digits = sk.strip_prefix("t#")?.get(..13)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// How a partition is trimmed: `c` (a conversation), `u` (a user's copies), or not at all.
fn trim_kind(pk: &str) -> Option<&'static str> {
    if pk.starts_with("c#") {
        Some("c")
    } else if pk.starts_with("u#") {
        Some("u")
    } else {
        None
    }
}

/// The oldest SentAt of the time-ordered rows of each trimmable partition among `rows`.
fn oldest_per_partition(rows: &[Row]) -> HashMap<String, i64> {
    let mut oldest: HashMap<String, i64> = HashMap::new();
    for row in rows {
        if trim_kind(&row.pk).is_none() {
            continue;
        }
        if let Some(at) = sent_at_of(&row.sk) {
            oldest
                .entry(row.pk.clone())
                .and_modify(|o| *o = (*o).min(at))
                .or_insert(at);
        }
    }
    oldest
}

/// The sort key below which a partition's time-ordered rows are older than `bound_ms`.
fn bound_sk(bound_ms: i64) -> String {
    format!("t#{:013}", bound_ms.max(0))
}

/// The 1:1 conversations among `convs` (group memberships are never trimmed).
fn direct_convs(convs: Vec<String>) -> Vec<String> {
    convs.into_iter().filter(|c| c.starts_with("p:")).collect()
}

impl RedisTable {
    /// The call-log table in the Redis behind `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            put: Script::from_lua(PUT_LUA),
            put_if_newer: Script::from_lua(PUT_IF_NEWER_LUA),
            query: Script::from_lua(QUERY_LUA),
            ages_page: Script::from_lua(AGES_PAGE_LUA),
            ages_register: Script::from_lua(AGES_REGISTER_LUA),
            trim: Script::from_lua(TRIM_LUA),
            trim_summaries: Script::from_lua(TRIM_SUMMARIES_LUA),
            oldest: Script::from_lua(OLDEST_LUA),
            registered: Mutex::default(),
        }
    }

    /// Registers partitions in the ages index (those this node did not register lately).
    /// Called after their rows are written: a trim that unregisters an emptied partition
    /// then looks again and finds these rows (see [`Self::trim_partition`]).
    async fn register_ages(&self, oldest: HashMap<String, i64>) -> Result<(), StoreError> {
        let now = chrono::Utc::now().timestamp_millis();
        let needed: Vec<(String, i64)> = {
            let cache = self.registered.lock().unwrap_or_else(|e| e.into_inner());
            oldest
                .into_iter()
                .filter(|(pk, at)| cache.needs(pk, *at, now))
                .collect()
        };
        for chunk in needed.chunks(AGES_PER_CALL) {
            let args: Vec<Value> = chunk
                .iter()
                .flat_map(|(pk, at)| [Value::from(*at), Value::from(pk.as_str())])
                .collect();
            self.register_args(args).await?;
        }
        let mut cache = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        for (pk, at) in needed {
            cache.remember(pk, at, now);
        }
        Ok(())
    }

    async fn register_args(&self, args: Vec<Value>) -> Result<(), StoreError> {
        let _: i64 = self
            .ages_register
            .evalsha_with_reload(self.pool.next(), vec![AGES_KEY], args)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Takes the trim lease for `ttl_ms` unless another holder has it; true when taken.
    pub async fn take_trim_lease(&self, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let taken: Option<String> = self
            .pool
            .set(
                LEASE_KEY,
                holder,
                Some(Expiration::PX(ttl_ms.max(1))),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(taken.is_some())
    }

    /// Deletes the rows older than `bounds.remove_below` from every partition whose oldest
    /// row is older than `bounds.visit_below`, with the receipts and summaries that point at
    /// them, in calls of at most [`TRIM_ROWS_PER_CALL`] rows, visiting at most
    /// [`PARTITIONS_PER_TRIM`] partitions. Idempotent; several nodes may trim at once.
    pub async fn trim(&self, bounds: TrimBounds) -> Result<Trimmed, StoreError> {
        let mut done = Trimmed::default();
        // A partition a writer re-registers with an old score (an old record written again)
        // is left for the next trim rather than visited twice in this one.
        let mut visited: HashSet<String> = HashSet::new();
        loop {
            let args: Vec<Value> = vec![
                bounds.visit_below.into(),
                i64::try_from(PARTITIONS_PER_PAGE).unwrap_or(100).into(),
            ];
            let page: Vec<String> = self
                .ages_page
                .evalsha_with_reload(self.pool.next(), vec![AGES_KEY], args)
                .await
                .map_err(unavailable)?;
            let fresh: Vec<String> = page
                .into_iter()
                .filter(|pk| visited.insert(pk.clone()))
                .collect();
            if fresh.is_empty() || visited.len() > PARTITIONS_PER_TRIM {
                return Ok(done);
            }
            let rows: Vec<u64> = stream::iter(fresh)
                .map(|pk| self.trim_partition(pk, bounds.remove_below))
                .buffer_unordered(TRIMS_IN_FLIGHT)
                .try_collect()
                .await?;
            done.partitions += rows.len() as u64;
            done.rows += rows.iter().sum::<u64>();
        }
    }

    /// Trims one partition; the rows deleted. Afterwards the partition is registered with its
    /// oldest remaining row, or unregistered when none remains.
    async fn trim_partition(&self, pk: String, remove_below: i64) -> Result<u64, StoreError> {
        let Some(kind) = trim_kind(&pk) else {
            let _: i64 = self
                .pool
                .zrem(AGES_KEY, pk.as_str())
                .await
                .map_err(unavailable)?;
            return Ok(0);
        };
        let bound = bound_sk(remove_below);
        let limit = i64::try_from(TRIM_ROWS_PER_CALL).unwrap_or(200);
        let mut removed = 0u64;
        let oldest = loop {
            let args: Vec<Value> = vec![bound.as_str().into(), limit.into(), kind.into()];
            let out: Vec<String> = self
                .trim
                .evalsha_with_reload(self.pool.next(), keys(&pk), args)
                .await
                .map_err(unavailable)?;
            let mut out = out.into_iter();
            let looked: usize = out.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            removed += out.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            let oldest = out.next().unwrap_or_default();
            let convs = direct_convs(out.collect());
            if let (Some(uid), false) = (pk.strip_prefix("u#"), convs.is_empty()) {
                removed += self.trim_summaries(uid, remove_below, convs).await?;
            }
            if looked < TRIM_ROWS_PER_CALL {
                break oldest;
            }
        };
        match sent_at_of(&oldest) {
            // Raises the score to the oldest row left. A writer lowering it meanwhile (an old
            // record written again) is overwritten: that row goes when this one's turn comes,
            // within one retention period, instead of at the next trim.
            Some(at) => {
                let _: i64 = self
                    .pool
                    .zadd(AGES_KEY, None, None, false, false, (at as f64, pk.as_str()))
                    .await
                    .map_err(unavailable)?;
            }
            None => {
                let _: i64 = self
                    .pool
                    .zrem(AGES_KEY, pk.as_str())
                    .await
                    .map_err(unavailable)?;
                // A writer registers after writing its rows, so rows written before the ZREM
                // are seen here, and a writer registering after it has re-added the partition.
                let left: Vec<String> = self
                    .oldest
                    .evalsha_with_reload(self.pool.next(), vec![idx_key(&pk)], Vec::<Value>::new())
                    .await
                    .map_err(unavailable)?;
                if let Some(at) = left.first().and_then(|sk| sent_at_of(sk)) {
                    self.register_args(vec![at.into(), pk.as_str().into()])
                        .await?;
                }
            }
        }
        Ok(removed)
    }

    /// Deletes `uid`'s summaries of `convs` whose latest event is older than `remove_below`.
    async fn trim_summaries(
        &self,
        uid: &str,
        remove_below: i64,
        convs: Vec<String>,
    ) -> Result<u64, StoreError> {
        let pk = format!("v#{uid}");
        let mut removed = 0u64;
        for chunk in convs.chunks(TRIM_ROWS_PER_CALL) {
            let mut args: Vec<Value> = Vec::with_capacity(chunk.len() + 1);
            args.push(remove_below.into());
            args.extend(chunk.iter().map(|c| Value::from(c.as_str())));
            let n: i64 = self
                .trim_summaries
                .evalsha_with_reload(self.pool.next(), keys(&pk), args)
                .await
                .map_err(unavailable)?;
            removed += u64::try_from(n).unwrap_or(0);
        }
        Ok(removed)
    }

    /// One script call of `script` with `call`'s keys and arguments.
    async fn run_call(&self, script: &Script, call: ScriptCall) -> Result<(), StoreError> {
        let _: i64 = script
            .evalsha_with_reload(self.pool.next(), call.keys, call.args)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Runs `calls` of `script`, [`WRITE_CALLS_IN_FLIGHT`] at once.
    async fn run_calls(&self, script: &Script, calls: Vec<ScriptCall>) -> Result<(), StoreError> {
        stream::iter(calls)
            .map(|call| self.run_call(script, call))
            .buffer_unordered(WRITE_CALLS_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    async fn get_partition(&self, pk: String, sks: Vec<String>) -> Result<Vec<Row>, StoreError> {
        let values: Vec<Option<String>> = self
            .pool
            .hmget(rows_key(&pk), sks.clone())
            .await
            .map_err(unavailable)?;
        sks.into_iter()
            .zip(values)
            .filter_map(|(sk, value)| value.map(|v| decode(&pk, sk, &v)))
            .collect()
    }
}

/// The keys and arguments of one script call.
struct ScriptCall {
    keys: Vec<String>,
    args: Vec<Value>,
}

/// Packs per-partition parts (the partition's two keys and its arguments) into script calls
/// of at most `max_rows` rows: every part in as few calls as possible on one Redis; on Redis
/// Cluster, where one call may touch only one hash slot, per slot.
struct CallPacker {
    cluster: bool,
    max_rows: usize,
    /// Open calls by slot (slot 0 for all on one Redis), with their row counts.
    open: HashMap<u16, (ScriptCall, usize)>,
    full: Vec<ScriptCall>,
}

impl CallPacker {
    fn new(cluster: bool, max_rows: usize) -> Self {
        Self {
            cluster,
            max_rows: max_rows.max(1),
            open: HashMap::new(),
            full: Vec::new(),
        }
    }

    /// Adds partition `pk`'s part: `rows` rows whose arguments are `args`.
    fn add(&mut self, pk: &str, rows: usize, args: Vec<Value>) {
        let slot = if self.cluster {
            fred::util::redis_keyslot(idx_key(pk).as_bytes())
        } else {
            0
        };
        let (call, count) = self.open.entry(slot).or_insert_with(|| {
            (
                ScriptCall {
                    keys: Vec::new(),
                    args: Vec::new(),
                },
                0,
            )
        });
        if *count > 0 && *count + rows > self.max_rows {
            self.full.push(std::mem::replace(
                call,
                ScriptCall {
                    keys: Vec::new(),
                    args: Vec::new(),
                },
            ));
            *count = 0;
        }
        call.keys.push(idx_key(pk));
        call.keys.push(rows_key(pk));
        call.args.extend(args);
        *count += rows;
    }

    /// Every call, full or not.
    fn finish(mut self) -> Vec<ScriptCall> {
        self.full
            .extend(self.open.into_values().map(|(call, _)| call));
        self.full
    }
}

/// The arguments of one conditional row (see [`PUT_IF_NEWER_LUA`]).
fn versioned_args(row: &Row, version: &str) -> Result<Vec<Value>, StoreError> {
    let new_version = row.int(version).map(|v| v.to_string()).unwrap_or_default();
    Ok(vec![
        row.sk.as_str().into(),
        encode(&row.attrs)?.into(),
        version.into(),
        new_version.into(),
    ])
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn idx_key(pk: &str) -> String {
    format!("wc:{{log:{pk}}}:idx")
}

fn rows_key(pk: &str) -> String {
    format!("wc:{{log:{pk}}}:rows")
}

fn keys(pk: &str) -> Vec<String> {
    vec![idx_key(pk), rows_key(pk)]
}

fn encode(attrs: &Map<String, serde_json::Value>) -> Result<String, StoreError> {
    serde_json::to_string(attrs).map_err(|e| StoreError::Internal(format!("encode row: {e}")))
}

fn decode(pk: &str, sk: String, json: &str) -> Result<Row, StoreError> {
    let attrs = serde_json::from_str(json)
        .map_err(|e| StoreError::Internal(format!("decode row {pk}/{sk}: {e}")))?;
    Ok(Row {
        pk: pk.to_owned(),
        sk,
        attrs,
    })
}

#[async_trait]
impl SortedTable for RedisTable {
    async fn put_rows(&self, rows: Vec<Row>) -> Result<(), StoreError> {
        // Deduped first, so the calls may run in any order.
        let rows = last_of_each_key(rows);
        let oldest = oldest_per_partition(&rows);
        let mut partitions: HashMap<String, Vec<Row>> = HashMap::new();
        for row in rows {
            partitions.entry(row.pk.clone()).or_default().push(row);
        }
        // Many partitions per script call (one call per batch on one Redis): a call costs
        // Redis and this node far more than the few writes of a partition inside it.
        let mut calls = CallPacker::new(self.pool.is_clustered(), ROWS_PER_CALL);
        for (pk, rows) in partitions {
            for chunk in rows.chunks(ROWS_PER_CALL) {
                let mut args = Vec::with_capacity(1 + chunk.len() * 2);
                args.push(Value::from(to_i64(chunk.len())));
                for row in chunk {
                    args.push(Value::from(row.sk.as_str()));
                    args.push(Value::from(encode(&row.attrs)?));
                }
                calls.add(&pk, chunk.len(), args);
            }
        }
        self.run_calls(&self.put, calls.finish()).await?;
        // After the rows, never before: see `trim_partition`.
        self.register_ages(oldest).await
    }

    async fn put_if_newer(&self, row: Row, version: &str) -> Result<(), StoreError> {
        let mut calls = CallPacker::new(self.pool.is_clustered(), 1);
        calls.add(&row.pk, 1, versioned_args(&row, version)?);
        self.run_calls(&self.put_if_newer, calls.finish()).await
    }

    async fn put_rows_if_newer(&self, rows: Vec<(Row, &'static str)>) -> Result<(), StoreError> {
        let mut calls = CallPacker::new(self.pool.is_clustered(), VERSIONED_ROWS_PER_CALL);
        for (row, version) in &rows {
            calls.add(&row.pk, 1, versioned_args(row, version)?);
        }
        self.run_calls(&self.put_if_newer, calls.finish()).await
    }

    async fn query(
        &self,
        pk: &str,
        range: SkRange,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        if limit == 0 {
            // LIMIT 0 0 would be fine, but a negative count means "all" to Redis: never send it.
            return Ok(Vec::new());
        }
        let min = range
            .after
            .map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let max = range
            .before
            .map_or_else(|| "+".to_owned(), |b| format!("({b}"));
        let descending = if order == Order::Descending { "1" } else { "0" };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let args: Vec<Value> = vec![min.into(), max.into(), descending.into(), limit.into()];
        let flat: Vec<String> = self
            .query
            .evalsha_with_reload(self.pool.next(), keys(pk), args)
            .await
            .map_err(unavailable)?;
        let mut rows = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(sk), Some(attrs)) = (flat.next(), flat.next()) {
            rows.push(decode(pk, sk, &attrs)?);
        }
        Ok(rows)
    }

    async fn get_rows(&self, keys: Vec<(String, String)>) -> Result<Vec<Row>, StoreError> {
        // A key asked twice is returned once, as DynamoDB (which refuses duplicates) does.
        let mut seen = HashSet::with_capacity(keys.len());
        let mut partitions: HashMap<String, Vec<String>> = HashMap::new();
        for (pk, sk) in keys {
            if seen.insert((pk.clone(), sk.clone())) {
                partitions.entry(pk).or_default().push(sk);
            }
        }
        let pages: Vec<Vec<Row>> = stream::iter(partitions)
            .map(|(pk, sks)| self.get_partition(pk, sks))
            .buffer_unordered(CALLS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    fn carries_writes(&self) -> bool {
        // The call-log table and the inboxes share one Redis (start-up builds both on one
        // pool), and a script may touch any key of one Redis; on a cluster the rows live in
        // other slots than the receiver's inbox. A table on a Redis of its own would have to
        // say no here.
        !self.pool.is_clustered()
    }

    fn carried(&self, rows: &RowsToWrite) -> Result<Option<CarriedRows>, StoreError> {
        if !self.carries_writes() {
            return Ok(None);
        }
        let carried = |row: &Row, version: Option<&str>| -> Result<CarriedRow, StoreError> {
            let takes_seq = matches!(
                row.attrs.get("seq"),
                Some(serde_json::Value::String(marker)) if marker == SEQ_FROM_APPEND
            );
            // Encoded without the marker, from references: no copy of the attributes.
            let attrs: std::collections::BTreeMap<&String, &serde_json::Value> = row
                .attrs
                .iter()
                .filter(|(name, _)| !(takes_seq && name.as_str() == "seq"))
                .collect();
            let attrs = serde_json::to_string(&attrs)
                .map_err(|e| StoreError::Internal(format!("encode row: {e}")))?;
            Ok(CarriedRow {
                index_key: idx_key(&row.pk),
                rows_key: rows_key(&row.pk),
                sk: row.sk.clone(),
                attrs,
                seq_attr: takes_seq.then(|| "seq".to_owned()),
                version: version.map(|v| (v.to_owned(), row.int(v).unwrap_or(i64::MIN))),
            })
        };
        let mut out = Vec::with_capacity(rows.plain.len() + rows.versioned.len());
        for row in &rows.plain {
            out.push(carried(row, None)?);
        }
        for (row, version) in &rows.versioned {
            out.push(carried(row, Some(version))?);
        }
        // Registered in the same script as the rows, so never before them (see
        // `trim_partition`). Every time, not only when this node's `AgeCache` says so: a
        // cache entry is only safe once the registration is known to be written, and a
        // `ZADD LT` of a registered partition changes nothing.
        let oldest = oldest_per_partition(&rows.plain);
        let ages =
            (!oldest.is_empty()).then(|| (AGES_KEY.to_owned(), oldest.into_iter().collect()));
        Ok(Some(CarriedRows { rows: out, ages }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping::<()>(None).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_redis_packs_partitions_into_as_few_calls_as_the_row_bound_allows() {
        let mut calls = CallPacker::new(false, 3);
        for pk in ["c#a", "u#a", "u#b", "v#a"] {
            calls.add(pk, 1, vec![Value::from(1)]);
        }
        let calls = calls.finish();
        let rows: Vec<usize> = calls.iter().map(|c| c.keys.len() / 2).collect();
        assert_eq!(rows.iter().sum::<usize>(), 4, "{rows:?}");
        assert_eq!(calls.len(), 2, "3 rows per call: {rows:?}");
    }

    #[test]
    fn a_cluster_call_never_spans_two_hash_slots() {
        let mut calls = CallPacker::new(true, 500);
        let pks: Vec<String> = (0..50).map(|i| format!("u#user{i}")).collect();
        for pk in &pks {
            calls.add(pk, 1, vec![Value::from(1)]);
        }
        let calls = calls.finish();
        assert!(calls.len() > 1);
        for call in &calls {
            let slots: HashSet<u16> = call
                .keys
                .iter()
                .map(|k| fred::util::redis_keyslot(k.as_bytes()))
                .collect();
            assert_eq!(slots.len(), 1, "{:?}", call.keys);
        }
        assert_eq!(calls.iter().map(|c| c.keys.len()).sum::<usize>(), 100);
    }

    #[test]
    fn both_keys_of_a_partition_share_one_hash_tag() {
        assert_eq!(idx_key("c#1"), "wc:{log:c#1}:idx");
        assert_eq!(rows_key("c#1"), "wc:{log:c#1}:rows");
    }

    #[test]
    fn only_time_ordered_sort_keys_have_a_sent_at() {
        assert_eq!(
            sent_at_of("t#1700000000123#message#a#m1"),
            Some(1_700_000_000_123)
        );
        assert_eq!(sent_at_of("t#0000000000000#p:a:b#message#a#m"), Some(0));
        assert_eq!(sent_at_of("t#000"), None, "too short");
        assert_eq!(sent_at_of("t#17000000x0123#m"), None, "not digits");
        assert_eq!(sent_at_of("r#a#m1#delivery"), None);
        assert_eq!(sent_at_of("p:a:b"), None);
    }

    #[test]
    fn the_bound_sort_key_splits_a_millisecond_exactly() {
        let bound = bound_sk(1_700_000_000_000);
        assert!("t#1699999999999#message#a#m" < bound.as_str());
        assert!(
            "t#1700000000000#message#a#m" > bound.as_str(),
            "the bound's own ms stays"
        );
        assert_eq!(bound_sk(-5), "t#0000000000000");
    }

    #[test]
    fn only_conversation_and_copy_partitions_are_registered_with_their_oldest_row() {
        let rows = vec![
            Row::new("c#p:a:b", "t#0000000000200#message#a#m2"),
            Row::new("c#p:a:b", "t#0000000000100#message#a#m1"),
            Row::new("c#p:a:b", "r#a#m1#delivery"),
            Row::new("u#a", "t#0000000000300#p:a:b#message#a#m3"),
            Row::new("v#a", "p:a:b"),
            Row::new("x#a", "t#0000000000001#x"),
        ];
        let mut oldest: Vec<(String, i64)> = oldest_per_partition(&rows).into_iter().collect();
        oldest.sort();
        assert_eq!(
            oldest,
            [("c#p:a:b".to_owned(), 100), ("u#a".to_owned(), 300)]
        );
    }

    #[test]
    fn group_memberships_are_never_trimmed_as_summaries() {
        let convs = vec!["p:a:b".to_owned(), "g:group_x".to_owned()];
        assert_eq!(direct_convs(convs), ["p:a:b"]);
    }

    #[test]
    fn a_recent_registration_covers_newer_rows_only() {
        let now = 1_000_000_000_000;
        let mut cache = AgeCache::default();
        assert!(cache.needs("c#x", now, now), "unknown partition");
        cache.remember("c#x".into(), now - 1_000, now);
        assert!(!cache.needs("c#x", now, now), "newer rows are covered");
        assert!(!cache.needs("c#x", now - 1_000, now), "as old: covered");
        assert!(
            cache.needs("c#x", now - 2_000, now),
            "an older row lowers the score"
        );
        let later = now + AGE_CACHE_HORIZON_MS;
        assert!(
            cache.needs("c#x", later, later),
            "a registration past the horizon is not trusted"
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let now = 1_000_000_000_000;
        let mut cache = AgeCache::default();
        for i in 0..AGE_CACHE_CAP {
            cache.remember(format!("c#{i}"), now, now);
        }
        cache.remember("c#one-more".into(), now, now);
        assert!(cache.scores.len() <= AGE_CACHE_CAP);
        assert!(!cache.needs("c#one-more", now, now));
    }
}
