//! [`SortedTable`] in Amazon DynamoDB (or DynamoDB Local).
//!
//! One table, created on first connect when missing (on-demand billing). Item layout:
//! - `pk` S — partition key (HASH)
//! - `sk` S — sort key (RANGE); DynamoDB orders S keys by their UTF-8 bytes, as [`Row`] does
//! - `a`  S — the row's attributes as one JSON object
//! - `v`  N — only on rows written by [`SortedTable::put_if_newer`]: the integer value of the
//!   version attribute, so the conditional write can compare it server-side
//!
//! Rows written by `put_rows` carry no `v`, so a later `put_if_newer` on the same keys always
//! replaces them; the call log never mixes the two writes on one row.
//!
//! DynamoDB rejects empty key strings, so rows with an empty `pk` or `sk` fail with
//! [`StoreError::Internal`]; an empty `after` bound is therefore the same as no bound.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    config::{retry::RetryConfig, timeout::TimeoutConfig},
    types::{AttributeValue, KeyType, PutRequest, WriteRequest},
    Client,
};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::Map;
use webchat_core::dynamo::{self, build_error, sdk_error, GET_CHUNK, WRITE_CHUNK};

use super::table::{last_of_each_key, Order, Row, SkRange, SortedTable};
use crate::storage::StoreError;
/// The SDK configuration and credential rules are shared with the profile service.
pub use webchat_core::dynamo::{aws_credentials_configured, sdk_config};

/// Batch requests in flight at once for one call: enough to hide round trips, few enough not
/// to trip throttling on a fresh on-demand table.
const CHUNKS_IN_FLIGHT: usize = 8;

/// [`SortedTable`] over one DynamoDB table (layout in the module doc).
#[derive(Clone, Debug)]
pub struct DynamoTable {
    client: Client,
    table: String,
}

/// Connects to DynamoDB at `endpoint` (see [`sdk_config`]) and creates `table_name` when it
/// does not exist yet. Another node may create it concurrently.
pub async fn connect(endpoint: &str, table_name: &str) -> Result<DynamoTable, StoreError> {
    // Short timeouts: an unreachable DynamoDB must fail an operation (and start-up) within
    // seconds with `Unavailable`, not hang a caller that could retry elsewhere.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build();
    let retries = RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(50))
        .with_max_backoff(Duration::from_secs(1));
    let config = sdk_config(endpoint, timeouts, retries).await;
    let table = DynamoTable {
        client: Client::new(&config),
        table: table_name.to_owned(),
    };
    table.ensure_table().await?;
    Ok(table)
}

impl DynamoTable {
    /// Creates the table unless it exists (`pk` HASH, `sk` RANGE), then waits until it is
    /// ACTIVE.
    async fn ensure_table(&self) -> Result<(), StoreError> {
        let keys = [("pk", KeyType::Hash), ("sk", KeyType::Range)];
        dynamo::ensure_table(&self.client, &self.table, &keys).await
    }

    /// Writes one chunk of at most [`WRITE_CHUNK`] distinct keys.
    async fn write_chunk(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        dynamo::write_chunk(&self.client, &self.table, requests).await
    }

    /// Reads one chunk of at most [`GET_CHUNK`] distinct keys.
    async fn get_chunk(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<Vec<Row>, StoreError> {
        dynamo::get_chunk(&self.client, &self.table, keys)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }
}

impl DynamoTable {
    /// Writes `row` unless a row with its keys exists; whether it was written.
    pub async fn insert_if_absent(&self, row: &Row) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode(row, None)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Deletes the rows with these keys (absent ones are fine).
    pub async fn delete_rows(&self, keys: Vec<(String, String)>) -> Result<(), StoreError> {
        let mut seen = HashSet::with_capacity(keys.len());
        let requests = keys
            .into_iter()
            .filter(|key| seen.insert(key.clone()))
            .map(|(pk, sk)| {
                let delete = aws_sdk_dynamodb::types::DeleteRequest::builder()
                    .key("pk", AttributeValue::S(pk))
                    .key("sk", AttributeValue::S(sk))
                    .build()
                    .map_err(build_error)?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let chunks: Vec<Vec<WriteRequest>> = requests
            .chunks(WRITE_CHUNK)
            .map(<[WriteRequest]>::to_vec)
            .collect();
        stream::iter(chunks.into_iter().map(|chunk| self.write_chunk(chunk)))
            .buffer_unordered(CHUNKS_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

#[async_trait]
impl SortedTable for DynamoTable {
    async fn put_rows(&self, rows: Vec<Row>) -> Result<(), StoreError> {
        // Deduped over the whole call, not per chunk, so concurrent chunks never race on a key.
        let rows = last_of_each_key(rows);
        let mut requests = Vec::with_capacity(rows.len());
        for row in &rows {
            let put = PutRequest::builder()
                .set_item(Some(encode(row, None)?))
                .build()
                .map_err(build_error)?;
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        let mut chunks = Vec::with_capacity(requests.len().div_ceil(WRITE_CHUNK));
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            chunks.push(requests.by_ref().take(WRITE_CHUNK).collect::<Vec<_>>());
        }
        stream::iter(chunks)
            .map(|chunk| self.write_chunk(chunk))
            .buffer_unordered(CHUNKS_IN_FLIGHT)
            .try_collect::<()>()
            .await
    }

    async fn put_if_newer(&self, row: Row, version: &str) -> Result<(), StoreError> {
        let new_version = row.int(version);
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(encode(&row, new_version)?));
        // Same rule as the embedded table: a stored version wins over a larger one, and over
        // a row that has none.
        request = match new_version {
            Some(v) => request
                .condition_expression("attribute_not_exists(v) OR v <= :v")
                .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
            None => request.condition_expression("attribute_not_exists(v)"),
        };
        match request.send().await {
            Ok(_) => Ok(()),
            // The stored row is newer: the write is stale and is dropped, which is success.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn query(
        &self,
        pk: &str,
        range: SkRange,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        // No stored sort key is empty, so "after the empty string" bounds nothing, and
        // "before the empty string" matches nothing.
        let after = range.after.filter(|a| !a.is_empty());
        let before = range.before;
        if limit == 0 || before.as_deref() == Some("") {
            return Ok(Vec::new());
        }
        let mut values = HashMap::from([(":pk".to_owned(), AttributeValue::S(pk.to_owned()))]);
        // DynamoDB allows one condition on the sort key: two exclusive bounds become an
        // inclusive BETWEEN, and the (at most two) rows equal to a bound are dropped below.
        let condition = match (&after, &before) {
            (Some(a), Some(b)) => {
                if a >= b {
                    // BETWEEN refuses a reversed range; an empty one has no rows anyway.
                    return Ok(Vec::new());
                }
                values.insert(":a".into(), AttributeValue::S(a.clone()));
                values.insert(":b".into(), AttributeValue::S(b.clone()));
                "pk = :pk AND sk BETWEEN :a AND :b"
            }
            (Some(a), None) => {
                values.insert(":a".into(), AttributeValue::S(a.clone()));
                "pk = :pk AND sk > :a"
            }
            (None, Some(b)) => {
                values.insert(":b".into(), AttributeValue::S(b.clone()));
                "pk = :pk AND sk < :b"
            }
            (None, None) => "pk = :pk",
        };
        let mut rows = Vec::with_capacity(limit.min(1024));
        let mut start = None;
        loop {
            // Limit counts evaluated items, bound rows included; ask for two more than still
            // needed so a page is rarely wasted on them. A 1 MB page may still stop short:
            // keep paging until `limit` rows or the range is exhausted.
            let wanted = limit.saturating_sub(rows.len()).saturating_add(2);
            let page_limit = i32::try_from(wanted).unwrap_or(i32::MAX);
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(order == Order::Ascending)
                .consistent_read(true)
                .limit(page_limit)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in out.items.unwrap_or_default() {
                let row = decode(item)?;
                if Some(&row.sk) == after.as_ref() || Some(&row.sk) == before.as_ref() {
                    continue;
                }
                rows.push(row);
                if rows.len() == limit {
                    return Ok(rows);
                }
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                return Ok(rows);
            }
        }
    }

    async fn get_rows(&self, keys: Vec<(String, String)>) -> Result<Vec<Row>, StoreError> {
        // BatchGetItem, like BatchWriteItem, refuses duplicate keys.
        let mut seen = HashSet::with_capacity(keys.len());
        let keys: Vec<HashMap<String, AttributeValue>> = keys
            .into_iter()
            .filter(|key| seen.insert(key.clone()))
            .map(|(pk, sk)| {
                HashMap::from([
                    ("pk".to_owned(), AttributeValue::S(pk)),
                    ("sk".to_owned(), AttributeValue::S(sk)),
                ])
            })
            .collect();
        let chunks: Vec<Vec<_>> = keys.chunks(GET_CHUNK).map(<[_]>::to_vec).collect();
        let pages: Vec<Vec<Row>> = stream::iter(chunks)
            .map(|chunk| self.get_chunk(chunk))
            .buffer_unordered(CHUNKS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map(|_| ())
            .map_err(sdk_error)
    }
}

/// The item of `row`; `version` adds the `v` attribute.
fn encode(row: &Row, version: Option<i64>) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let attrs = serde_json::to_string(&row.attrs)
        .map_err(|e| StoreError::Internal(format!("encode row attributes: {e}")))?;
    let mut item = HashMap::from([
        ("pk".to_owned(), AttributeValue::S(row.pk.clone())),
        ("sk".to_owned(), AttributeValue::S(row.sk.clone())),
        ("a".to_owned(), AttributeValue::S(attrs)),
    ]);
    if let Some(v) = version {
        item.insert("v".to_owned(), AttributeValue::N(v.to_string()));
    }
    Ok(item)
}

/// The row of a stored item.
fn decode(mut item: HashMap<String, AttributeValue>) -> Result<Row, StoreError> {
    let mut string = |name: &str| match item.remove(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        other => Err(StoreError::Internal(format!(
            "DynamoDB item attribute {name} is not a string: {other:?}"
        ))),
    };
    let (pk, sk, attrs) = (string("pk")?, string("sk")?, string("a")?);
    let attrs: Map<String, serde_json::Value> = serde_json::from_str(&attrs)
        .map_err(|e| StoreError::Internal(format!("decode row attributes of {pk}/{sk}: {e}")))?;
    Ok(Row { pk, sk, attrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip() {
        let row = Row::new("p", "s").with("n", 3).with("t", "x");
        let item = encode(&row, Some(3)).expect("encode");
        assert_eq!(item.get("v"), Some(&AttributeValue::N("3".into())));
        assert_eq!(decode(item).expect("decode"), row);
    }

    #[test]
    fn a_malformed_item_is_internal() {
        let item = HashMap::from([("pk".to_owned(), AttributeValue::N("1".into()))]);
        assert!(matches!(decode(item), Err(StoreError::Internal(_))));
    }
}
