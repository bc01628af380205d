//! The storage shape of the call log: a sorted table of rows addressed by a partition key and
//! a sort key, with range queries inside one partition. DynamoDB has exactly this shape, and
//! redb (tuple keys) and Redis (a lexicographic sorted set per partition) can offer it, so the
//! call log's logic is written once over [`SortedTable`] and each back-end is small.

use std::{collections::HashMap, ops::Bound};

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::storage::{
    embedded::{internal, EmbeddedDb, ReadableTable, CALLLOG},
    StoreError,
};

/// One row: keys plus JSON attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Partition key: rows are only ever queried within one partition.
    pub pk: String,
    /// Sort key: rows of a partition are ordered by it (bytewise).
    pub sk: String,
    /// Everything else.
    pub attrs: Map<String, Value>,
}

impl Row {
    /// A row with no attributes yet.
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.into(),
            sk: sk.into(),
            attrs: Map::new(),
        }
    }

    /// Adds an attribute (builder style).
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.attrs.insert(name.to_owned(), value.into());
        self
    }

    /// A string attribute, "" when absent.
    pub fn str(&self, name: &str) -> &str {
        self.attrs.get(name).and_then(Value::as_str).unwrap_or("")
    }

    /// An integer attribute.
    pub fn int(&self, name: &str) -> Option<i64> {
        self.attrs.get(name).and_then(Value::as_i64)
    }
}

/// Sort-key bounds of a query, both exclusive; `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkRange {
    /// Only rows with a sort key greater than this.
    pub after: Option<String>,
    /// Only rows with a sort key less than this.
    pub before: Option<String>,
}

impl SkRange {
    /// Rows whose sort key starts with `prefix` (prefixes end before any byte above `~`).
    pub fn prefix(prefix: &str) -> Self {
        Self {
            after: Some(prefix.to_owned()),
            before: Some(format!("{prefix}\u{7f}")),
        }
    }
}

/// Which end of the range a query starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Smallest sort key first.
    Ascending,
    /// Largest sort key first.
    Descending,
}

/// The rows a batch of call-log records becomes: plain rows, and versioned rows (with the
/// name of their version attribute) that must never move backwards.
#[derive(Debug, Default)]
pub struct RowsToWrite {
    /// Written as they are.
    pub plain: Vec<Row>,
    /// Written unless a newer version is stored.
    pub versioned: Vec<(Row, &'static str)>,
}

/// The value of an attribute that the store fills with the Seq the carrying inbox append
/// assigns (see [`CarriedRows`]): the call log builds a 1:1 message's rows before the append
/// has given the message its Seq.
pub const SEQ_FROM_APPEND: &str = "\u{1}seq-from-append";

/// Row writes that another store call carries: an inbox append in the same Redis writes a
/// message's call-log rows in its own script call, so logging costs no queue entry, no
/// drain and no second round trip (see `inbox::LogEntry`). Built by
/// [`SortedTable::carried`]; only the Redis table describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedRows {
    /// The rows, in write order.
    pub rows: Vec<CarriedRow>,
    /// The retention index (a sorted set) the time-ordered partitions are registered in,
    /// and each registration: (partition, score), added with `ZADD LT`.
    pub ages: Option<(String, Vec<(String, i64)>)>,
}

/// One row of [`CarriedRows`], in the Redis table's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedRow {
    /// The partition's sorted set of sort keys.
    pub index_key: String,
    /// The partition's hash of sort key → attributes.
    pub rows_key: String,
    /// The sort key.
    pub sk: String,
    /// The attributes' JSON object, without the Seq.
    pub attrs: String,
    /// The attribute the append's Seq goes in, if any.
    pub seq_attr: Option<String>,
    /// A versioned row: its version attribute and version (written unless the stored row
    /// has a larger one, as [`SortedTable::put_if_newer`]).
    pub version: Option<(String, i64)>,
}

/// Conditional writes in flight at once in the default [`SortedTable::put_rows_if_newer`].
pub const VERSIONED_IN_FLIGHT: usize = 16;

/// A sorted table. Every write is idempotent, so the call log can be written at least once.
#[async_trait]
pub trait SortedTable: Send + Sync {
    /// Writes `rows`, replacing rows with the same keys.
    async fn put_rows(&self, rows: Vec<Row>) -> Result<(), StoreError>;
    /// Writes `row` unless the stored row with its keys has a larger integer attribute
    /// `version` (writes arriving out of order never move state backwards).
    async fn put_if_newer(&self, row: Row, version: &str) -> Result<(), StoreError>;
    /// [`SortedTable::put_if_newer`] for each of `rows` (row, version attribute), at most one
    /// row per key. A back-end that can write many conditional rows in one call overrides
    /// it; the default runs [`VERSIONED_IN_FLIGHT`] at a time.
    async fn put_rows_if_newer(&self, rows: Vec<(Row, &'static str)>) -> Result<(), StoreError> {
        // Bounded: thousands of conditional writes at once only queue up inside the back-end
        // (and time out there) instead of finishing sooner.
        for chunk in rows.chunks(VERSIONED_IN_FLIGHT) {
            let writes = chunk
                .iter()
                .map(|(row, version)| self.put_if_newer(row.clone(), version));
            for result in futures_util::future::join_all(writes).await {
                result?;
            }
        }
        Ok(())
    }
    /// Up to `limit` rows of partition `pk` inside `range`, in `order`.
    async fn query(
        &self,
        pk: &str,
        range: SkRange,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError>;
    /// The rows that exist among `keys` (pk, sk), in any order.
    async fn get_rows(&self, keys: Vec<(String, String)>) -> Result<Vec<Row>, StoreError>;
    /// Whether the back-end answers (for `/health`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Whether [`SortedTable::carried`] describes writes (only a Redis table in the inbox's
    /// own Redis does).
    fn carries_writes(&self) -> bool {
        false
    }
    /// `rows` as writes an inbox append carries in its own store call, where this table
    /// can; rows holding [`SEQ_FROM_APPEND`] get the append's Seq there.
    fn carried(&self, _rows: &RowsToWrite) -> Result<Option<CarriedRows>, StoreError> {
        Ok(None)
    }
}

/// `rows` with only the last row of each (pk, sk), in input order. Back-ends that split a
/// write into concurrent batches use it so "last write wins" holds without ordering the
/// batches (and DynamoDB refuses a batch naming one key twice).
pub fn last_of_each_key(rows: Vec<Row>) -> Vec<Row> {
    let mut last: HashMap<(&str, &str), usize> = HashMap::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        last.insert((row.pk.as_str(), row.sk.as_str()), i);
    }
    if last.len() == rows.len() {
        return rows;
    }
    let keep: Vec<bool> = rows
        .iter()
        .enumerate()
        .map(|(i, row)| last.get(&(row.pk.as_str(), row.sk.as_str())) == Some(&i))
        .collect();
    rows.into_iter()
        .zip(keep)
        .filter_map(|(row, keep)| keep.then_some(row))
        .collect()
}

/// [`SortedTable`] in the embedded database: key (pk, sk) → attributes JSON.
pub struct EmbeddedTable {
    db: EmbeddedDb,
}

impl EmbeddedTable {
    /// The call-log table of `db`.
    pub fn new(db: EmbeddedDb) -> Self {
        Self { db }
    }
}

fn encode(attrs: &Map<String, Value>) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(attrs).map_err(internal)
}

fn decode(pk: &str, sk: &str, bytes: &[u8]) -> Result<Row, StoreError> {
    Ok(Row {
        pk: pk.to_owned(),
        sk: sk.to_owned(),
        attrs: serde_json::from_slice(bytes).map_err(internal)?,
    })
}

#[async_trait]
impl SortedTable for EmbeddedTable {
    async fn put_rows(&self, rows: Vec<Row>) -> Result<(), StoreError> {
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(CALLLOG).map_err(internal)?;
                    for row in &rows {
                        let value = encode(&row.attrs)?;
                        table
                            .insert((row.pk.as_str(), row.sk.as_str()), value.as_slice())
                            .map_err(internal)?;
                    }
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn put_if_newer(&self, row: Row, version: &str) -> Result<(), StoreError> {
        let version = version.to_owned();
        self.db
            .write(
                move |txn| {
                    let mut table = txn.open_table(CALLLOG).map_err(internal)?;
                    let key = (row.pk.as_str(), row.sk.as_str());
                    let stored_version = match table.get(key).map_err(internal)? {
                        Some(bytes) => decode(&row.pk, &row.sk, bytes.value())?.int(&version),
                        None => None,
                    };
                    if stored_version.is_some_and(|v| Some(v) > row.int(&version)) {
                        return Ok(());
                    }
                    let value = encode(&row.attrs)?;
                    table.insert(key, value.as_slice()).map_err(internal)?;
                    Ok(())
                },
                |_| {},
            )
            .await
    }

    async fn query(
        &self,
        pk: &str,
        range: SkRange,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let pk = pk.to_owned();
        self.db
            .read(move |txn| {
                let table = txn.open_table(CALLLOG).map_err(internal)?;
                let lower = match &range.after {
                    Some(after) => Bound::Excluded((pk.as_str(), after.as_str())),
                    None => Bound::Included((pk.as_str(), "")),
                };
                // No sort key reaches past the last Unicode scalar value, so this bounds the
                // partition when the range is open above.
                let upper = match &range.before {
                    Some(before) => Bound::Excluded((pk.as_str(), before.as_str())),
                    None => Bound::Included((pk.as_str(), "\u{10ffff}")),
                };
                let iter = table
                    .range::<(&str, &str)>((lower, upper))
                    .map_err(internal)?;
                let mut rows = Vec::new();
                let mut push = |entry: Result<_, redb::StorageError>| -> Result<bool, StoreError> {
                    let (key, value): (redb::AccessGuard<(&str, &str)>, redb::AccessGuard<&[u8]>) =
                        entry.map_err(internal)?;
                    let (pk, sk) = key.value();
                    rows.push(decode(pk, sk, value.value())?);
                    Ok(rows.len() < limit)
                };
                if limit == 0 {
                    return Ok(rows);
                }
                match order {
                    Order::Ascending => {
                        for entry in iter {
                            if !push(entry)? {
                                break;
                            }
                        }
                    }
                    Order::Descending => {
                        for entry in iter.rev() {
                            if !push(entry)? {
                                break;
                            }
                        }
                    }
                }
                Ok(rows)
            })
            .await
    }

    async fn get_rows(&self, keys: Vec<(String, String)>) -> Result<Vec<Row>, StoreError> {
        self.db
            .read(move |txn| {
                let table = txn.open_table(CALLLOG).map_err(internal)?;
                let mut rows = Vec::new();
                for (pk, sk) in &keys {
                    if let Some(value) = table.get((pk.as_str(), sk.as_str())).map_err(internal)? {
                        rows.push(decode(pk, sk, value.value())?);
                    }
                }
                Ok(rows)
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.read(|_| Ok(())).await
    }
}

/// Checks the [`SortedTable`] contract; every back-end's tests run it.
#[doc(hidden)]
pub mod contract {
    use super::*;

    /// Panics with a message naming the broken rule. `pk_prefix` keeps runs apart.
    pub async fn check(table: &dyn SortedTable, pk_prefix: &str) {
        let pk = format!("{pk_prefix}c#p");
        let rows: Vec<Row> = (0..30)
            .map(|i| Row::new(&pk, format!("t#{i:03}")).with("n", i))
            .chain([Row::new(&pk, "r#x").with("n", 100)])
            .collect();
        table.put_rows(rows.clone()).await.expect("put rows");
        table.put_rows(rows[..3].to_vec()).await.expect("put again");

        let all = table
            .query(&pk, SkRange::prefix("t#"), Order::Ascending, 100)
            .await
            .expect("query");
        assert_eq!(all.len(), 30, "a prefix query returns exactly its rows");
        assert_eq!(all[0], rows[0], "rows round-trip");
        assert!(all.windows(2).all(|w| w[0].sk < w[1].sk), "ascending order");

        let page = table
            .query(
                &pk,
                SkRange {
                    after: Some("t#".into()),
                    before: Some("t#010".into()),
                },
                Order::Descending,
                4,
            )
            .await
            .expect("query page");
        let sks: Vec<&str> = page.iter().map(|r| r.sk.as_str()).collect();
        assert_eq!(
            sks,
            ["t#009", "t#008", "t#007", "t#006"],
            "descending, exclusive bound, limit"
        );

        let open = table
            .query(&pk, SkRange::default(), Order::Descending, 1)
            .await
            .expect("open query");
        assert_eq!(open[0].sk, "t#029", "unbounded query covers the partition");
        let other = table
            .query(&format!("{pk}x"), SkRange::default(), Order::Ascending, 10)
            .await
            .expect("other partition");
        assert!(other.is_empty(), "partitions are separate");

        let got = table
            .get_rows(vec![
                (pk.clone(), "t#005".into()),
                (pk.clone(), "missing".into()),
                (pk.clone(), "r#x".into()),
            ])
            .await
            .expect("get rows");
        let mut got_sks: Vec<&str> = got.iter().map(|r| r.sk.as_str()).collect();
        got_sks.sort_unstable();
        assert_eq!(got_sks, ["r#x", "t#005"], "get returns the existing rows");

        let key = format!("{pk_prefix}v#u");
        table
            .put_if_newer(Row::new(&key, "p").with("at", 10).with("s", "ten"), "at")
            .await
            .expect("first versioned write");
        table
            .put_if_newer(Row::new(&key, "p").with("at", 5).with("s", "five"), "at")
            .await
            .expect("stale write is accepted and ignored");
        let kept = table
            .get_rows(vec![(key.clone(), "p".into())])
            .await
            .expect("get");
        assert_eq!(
            kept[0].str("s"),
            "ten",
            "an older version never replaces a newer one"
        );
        table
            .put_if_newer(Row::new(&key, "p").with("at", 11).with("s", "eleven"), "at")
            .await
            .expect("newer write");
        let kept = table
            .get_rows(vec![(key.clone(), "p".into())])
            .await
            .expect("get");
        assert_eq!(kept[0].str("s"), "eleven", "a newer version replaces");

        // Many conditional rows at once, over several partitions: each row follows the rule.
        let other = format!("{pk_prefix}v#w");
        table
            .put_rows_if_newer(vec![
                (Row::new(&key, "p").with("at", 9).with("s", "nine"), "at"),
                (Row::new(&key, "q").with("at", 1).with("s", "new row"), "at"),
                (Row::new(&other, "p").with("at", 3).with("s", "three"), "at"),
            ])
            .await
            .expect("versioned batch");
        let mut kept = table
            .get_rows(vec![
                (key.clone(), "p".into()),
                (key.clone(), "q".into()),
                (other.clone(), "p".into()),
            ])
            .await
            .expect("get");
        kept.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
        let texts: Vec<&str> = kept.iter().map(|r| r.str("s")).collect();
        assert_eq!(
            texts,
            ["eleven", "new row", "three"],
            "a batch skips stale rows and writes the rest"
        );
        // Rows of many partitions in one write all land.
        let spread: Vec<Row> = (0..40)
            .map(|i| Row::new(format!("{pk_prefix}u#{i}"), "t#1").with("n", i))
            .collect();
        table.put_rows(spread).await.expect("put spread rows");
        let got = table
            .get_rows(
                (0..40)
                    .map(|i| (format!("{pk_prefix}u#{i}"), "t#1".to_owned()))
                    .collect(),
            )
            .await
            .expect("get spread rows");
        assert_eq!(got.len(), 40, "every partition of one write has its row");
        table.ping().await.expect("ping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_embedded_table_keeps_the_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = EmbeddedDb::open(dir.path()).expect("open");
        contract::check(&EmbeddedTable::new(db), "").await;
    }
}
