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
use aws_config::{
    environment::EnvironmentVariableRegionProvider, meta::region::RegionProviderChain,
    profile::ProfileFileRegionProvider, BehaviorVersion,
};
use aws_sdk_dynamodb::{
    config::{retry::RetryConfig, timeout::TimeoutConfig, Credentials, Region},
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
        KeysAndAttributes, PutRequest, ScalarAttributeType, TableStatus, WriteRequest,
    },
    Client,
};
use futures_util::{stream, StreamExt, TryStreamExt};
use rand::Rng;
use serde_json::Map;

use super::table::{last_of_each_key, Order, Row, SkRange, SortedTable};
use crate::storage::StoreError;

/// DynamoDB's limit on items per BatchWriteItem.
const WRITE_CHUNK: usize = 25;
/// DynamoDB's limit on keys per BatchGetItem.
const GET_CHUNK: usize = 100;
/// Batch requests in flight at once for one call: enough to hide round trips, few enough not
/// to trip throttling on a fresh on-demand table.
const CHUNKS_IN_FLIGHT: usize = 8;
/// Rounds of re-sending unprocessed items/keys before giving up with `Unavailable`.
const BATCH_ATTEMPTS: u32 = 8;
/// How long `connect` waits for a new table to become ACTIVE.
const TABLE_ACTIVE_WAIT: Duration = Duration::from_secs(60);

/// [`SortedTable`] over one DynamoDB table (layout in the module doc).
#[derive(Clone, Debug)]
pub struct DynamoTable {
    client: Client,
    table: String,
}

/// The AWS SDK configuration for a DynamoDB `endpoint` (e.g. DynamoDB Local), shared by the
/// chat server and the profile service. Region: `AWS_REGION`/`AWS_DEFAULT_REGION`, then the
/// AWS profile files, else us-east-1. Credentials: the SDK's usual chain when credentials are
/// named somewhere it looks ([`aws_credentials_configured`]), else static dummy keys, which
/// DynamoDB Local accepts. Neither ever falls back to the instance-metadata service, so a
/// machine without AWS set-up contacts nothing but the configured endpoint (no probe of
/// 169.254.169.254, no warning about it).
pub async fn sdk_config(
    endpoint: &str,
    timeouts: TimeoutConfig,
    retries: RetryConfig,
) -> aws_config::SdkConfig {
    let region = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(ProfileFileRegionProvider::new())
        .or_else(Region::new("us-east-1"));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(region)
        .timeout_config(timeouts)
        .retry_config(retries);
    if !aws_credentials_configured() {
        loader =
            loader.credentials_provider(Credentials::new("local", "local", None, None, "webchat"));
    }
    loader.load().await
}

/// Credentials named where the SDK's default chain looks (environment, a credentials file,
/// web identity, container, or a profile named by `AWS_PROFILE`). Without any, the endpoint is
/// taken to be DynamoDB Local.
pub fn aws_credentials_configured() -> bool {
    let env = [
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ];
    if env.iter().any(|v| std::env::var_os(v).is_some()) {
        return true;
    }
    // A credentials file names keys. A config file alone (often just a region) does not:
    // with it, the SDK's chain would end at the instance-metadata service. A profile that
    // gets credentials through SSO or a process is named with AWS_PROFILE.
    std::env::var_os("HOME").is_some_and(|home| {
        std::path::Path::new(&home)
            .join(".aws")
            .join("credentials")
            .exists()
    })
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
    /// Creates the table unless it exists, then waits until it is ACTIVE.
    async fn ensure_table(&self) -> Result<(), StoreError> {
        match self.table_status().await? {
            Some(TableStatus::Active) => return Ok(()),
            Some(_) => {}
            None => self.create_table().await?,
        }
        let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_WAIT;
        loop {
            if self.table_status().await? == Some(TableStatus::Active) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "DynamoDB table {} is not ACTIVE after {TABLE_ACTIVE_WAIT:?}",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The table's status, `None` when it does not exist.
    async fn table_status(&self) -> Result<Option<TableStatus>, StoreError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(out.table.and_then(|t| t.table_status)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    async fn create_table(&self) -> Result<(), StoreError> {
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_error)
        };
        let string_attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        };
        let result = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .attribute_definitions(string_attr("pk")?)
            .attribute_definitions(string_attr("sk")?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Another node created it between our DescribeTable and CreateTable.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_in_use_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error(e)),
        }
    }

    /// Writes one chunk of at most [`WRITE_CHUNK`] distinct keys, re-sending what DynamoDB
    /// leaves unprocessed (it does so under throttling) with backoff.
    async fn write_chunk(&self, mut requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for attempt in 0..BATCH_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(sdk_error)?;
            requests = out
                .unprocessed_items
                .and_then(|mut m| m.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!(
            "DynamoDB left {} items unprocessed after {BATCH_ATTEMPTS} attempts",
            requests.len()
        )))
    }

    /// Reads one chunk of at most [`GET_CHUNK`] distinct keys, re-asking for unprocessed keys.
    async fn get_chunk(
        &self,
        mut keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<Vec<Row>, StoreError> {
        let mut rows = Vec::with_capacity(keys.len());
        for attempt in 0..BATCH_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt).await;
            }
            let request = KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(build_error)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.table, request)
                .send()
                .await
                .map_err(sdk_error)?;
            for item in out
                .responses
                .and_then(|mut m| m.remove(&self.table))
                .unwrap_or_default()
            {
                rows.push(decode(item)?);
            }
            keys = out
                .unprocessed_keys
                .and_then(|mut m| m.remove(&self.table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if keys.is_empty() {
                return Ok(rows);
            }
        }
        Err(StoreError::Unavailable(format!(
            "DynamoDB left {} keys unprocessed after {BATCH_ATTEMPTS} attempts",
            keys.len()
        )))
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

/// Exponential backoff with full jitter before re-sending unprocessed batch entries:
/// ~25 ms, 50 ms, … capped at 2 s.
async fn backoff(attempt: u32) {
    let cap_ms = (25u64 << attempt.min(7)).min(2_000);
    let ms = rand::thread_rng().gen_range(cap_ms / 2..=cap_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Maps an SDK failure: what a retry may cure (no connection, timeouts, throttling, server
/// errors) is `Unavailable`; the rest (validation, missing table, access denied) is `Internal`.
fn sdk_error<E>(e: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retryable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(se) => {
            se.raw().status().is_server_error()
                || matches!(
                    se.err().code(),
                    Some(
                        "ProvisionedThroughputExceededException"
                            | "ThrottlingException"
                            | "RequestLimitExceeded"
                            | "InternalServerError"
                            | "ServiceUnavailable"
                            | "LimitExceededException"
                            | "TransactionConflictException"
                    )
                )
        }
        _ => false,
    };
    let message = format!("DynamoDB: {}", DisplayErrorContext(&e));
    if retryable {
        StoreError::Unavailable(message)
    } else {
        StoreError::Internal(message)
    }
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Internal(format!("DynamoDB request: {e}"))
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
