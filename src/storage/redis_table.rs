//! [`SortedTable`] in Redis.
//!
//! Per partition `pk`, two keys sharing the hash tag `{log:<pk>}` (one Redis Cluster slot,
//! so scripts may touch both):
//! - `wc:{log:<pk>}:idx`  sorted set, every score 0, members = sort keys: equal scores make
//!   Redis order members bytewise, which is the [`Row`] order, and BYLEX ranges query it
//! - `wc:{log:<pk>}:rows` hash sort key → attributes JSON
//!
//! Every write and every query is one Lua script over both keys, so the index and the rows
//! never disagree and each call costs one round trip per partition. `put_if_newer` reads the
//! stored version from the stored JSON (cjson): versions are compared as Lua numbers
//! (doubles), exact up to 2^53.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{ClientLike, HashesInterface},
    types::{scripts::Script, Value},
};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::Map;

use super::table::{last_of_each_key, Order, Row, SkRange, SortedTable};
use crate::storage::{redis::unavailable, StoreError};

/// Rows per script call: bounds how long one call holds Redis (scripts block the server).
const ROWS_PER_CALL: usize = 500;
/// Script calls / reads in flight at once for one `put_rows` / `get_rows`.
const CALLS_IN_FLIGHT: usize = 8;

/// KEYS: idx, rows. ARGV: sk1, attrs1, sk2, attrs2, … (later pairs win).
const PUT_LUA: &str = r"
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return #ARGV / 2
";

/// KEYS: idx, rows. ARGV: sk, attrs, version attribute name, new version ('' when the row
/// has no integer version). Same rule as the embedded table: a stored integer version wins
/// over a larger one and over a row without one. Returns 1 when written, 0 when stale.
const PUT_IF_NEWER_LUA: &str = r"
local stored = redis.call('HGET', KEYS[2], ARGV[1])
if stored then
  local ok, doc = pcall(cjson.decode, stored)
  local old = ok and type(doc) == 'table' and doc[ARGV[3]] or nil
  if type(old) == 'number' and old == math.floor(old) then
    local new = tonumber(ARGV[4])
    if new == nil or old > new then
      return 0
    end
  end
end
redis.call('ZADD', KEYS[1], 0, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
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

/// [`SortedTable`] over Redis (layout in the module doc).
pub struct RedisTable {
    pool: Pool,
    put: Script,
    put_if_newer: Script,
    query: Script,
}

impl RedisTable {
    /// The call-log table in the Redis behind `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            put: Script::from_lua(PUT_LUA),
            put_if_newer: Script::from_lua(PUT_IF_NEWER_LUA),
            query: Script::from_lua(QUERY_LUA),
        }
    }

    /// One script call writing `args` (sk, attrs pairs) into partition `pk`.
    async fn put_partition(&self, pk: String, args: Vec<Value>) -> Result<(), StoreError> {
        let _: i64 = self
            .put
            .evalsha_with_reload(self.pool.next(), keys(&pk), args)
            .await
            .map_err(unavailable)?;
        Ok(())
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
        // Deduped first, so the chunks of one partition may run in any order.
        let rows = last_of_each_key(rows);
        let mut partitions: HashMap<String, Vec<Row>> = HashMap::new();
        for row in rows {
            partitions.entry(row.pk.clone()).or_default().push(row);
        }
        // Owned calls: the futures below must not borrow from this frame's locals.
        let mut calls: Vec<(String, Vec<Value>)> = Vec::new();
        for (pk, rows) in partitions {
            for chunk in rows.chunks(ROWS_PER_CALL) {
                let mut args = Vec::with_capacity(chunk.len() * 2);
                for row in chunk {
                    args.push(Value::from(row.sk.as_str()));
                    args.push(Value::from(encode(&row.attrs)?));
                }
                calls.push((pk.clone(), args));
            }
        }
        stream::iter(calls)
            .map(|(pk, args)| self.put_partition(pk, args))
            .buffer_unordered(CALLS_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    async fn put_if_newer(&self, row: Row, version: &str) -> Result<(), StoreError> {
        let new_version = row.int(version).map(|v| v.to_string()).unwrap_or_default();
        let args: Vec<Value> = vec![
            row.sk.as_str().into(),
            encode(&row.attrs)?.into(),
            version.into(),
            new_version.into(),
        ];
        let _: i64 = self
            .put_if_newer
            .evalsha_with_reload(self.pool.next(), keys(&row.pk), args)
            .await
            .map_err(unavailable)?;
        Ok(())
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.ping::<()>(None).await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_keys_of_a_partition_share_one_hash_tag() {
        assert_eq!(idx_key("c#1"), "wc:{log:c#1}:idx");
        assert_eq!(rows_key("c#1"), "wc:{log:c#1}:rows");
    }
}
