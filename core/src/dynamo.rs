//! DynamoDB plumbing both binaries share: the SDK configuration (no instance-metadata probe
//! on a machine without AWS set-up), creating a table on first use, the error mapping, and
//! the batch loops that re-send what DynamoDB leaves unprocessed.

use std::{collections::HashMap, time::Duration};

use aws_config::{
    environment::EnvironmentVariableRegionProvider, meta::region::RegionProviderChain,
    profile::ProfileFileRegionProvider, BehaviorVersion,
};
use aws_sdk_dynamodb::{
    config::{retry::RetryConfig, timeout::TimeoutConfig, Credentials, Region},
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    types::{
        AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
        KeysAndAttributes, ScalarAttributeType, TableStatus, WriteRequest,
    },
    Client,
};
use rand::Rng;

use crate::store::StoreError;

/// A DynamoDB item: attribute name to value.
pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's limit on items per BatchWriteItem.
pub const WRITE_CHUNK: usize = 25;
/// DynamoDB's limit on keys per BatchGetItem.
pub const GET_CHUNK: usize = 100;
/// Rounds of re-sending unprocessed items/keys before giving up with `Unavailable`.
const BATCH_ATTEMPTS: u32 = 8;
/// How long [`ensure_table`] waits for a new table to become ACTIVE.
const TABLE_ACTIVE_WAIT: Duration = Duration::from_secs(60);

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

/// Creates `table` unless it exists, keyed by the string attributes `keys` (the partition
/// key first, then the sort key if any; on-demand billing), then waits until it is ACTIVE.
/// Another process may create it at the same moment.
pub async fn ensure_table(
    client: &Client,
    table: &str,
    keys: &[(&str, KeyType)],
) -> Result<(), StoreError> {
    match table_status(client, table).await? {
        Some(TableStatus::Active) => return Ok(()),
        Some(_) => {}
        None => create_table(client, table, keys).await?,
    }
    let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_WAIT;
    loop {
        if table_status(client, table).await? == Some(TableStatus::Active) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "DynamoDB table {table} is not ACTIVE after {TABLE_ACTIVE_WAIT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The table's status, `None` when it does not exist.
async fn table_status(client: &Client, table: &str) -> Result<Option<TableStatus>, StoreError> {
    match client.describe_table().table_name(table).send().await {
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

async fn create_table(
    client: &Client,
    table: &str,
    keys: &[(&str, KeyType)],
) -> Result<(), StoreError> {
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, kind) in keys {
        request = request
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(*name)
                    .key_type(kind.clone())
                    .build()
                    .map_err(build_error)?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(build_error)?,
            );
    }
    match request.send().await {
        Ok(_) => {
            tracing::info!(table, "created DynamoDB table");
            Ok(())
        }
        // Another process created it between our DescribeTable and CreateTable.
        Err(e)
            if e.as_service_error()
                .is_some_and(|se| se.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(sdk_error(e)),
    }
}

/// Writes one chunk of at most [`WRITE_CHUNK`] distinct keys to `table`, re-sending what
/// DynamoDB leaves unprocessed (it does so under throttling) with backoff.
pub async fn write_chunk(
    client: &Client,
    table: &str,
    mut requests: Vec<WriteRequest>,
) -> Result<(), StoreError> {
    for attempt in 0..BATCH_ATTEMPTS {
        if attempt > 0 {
            backoff(attempt).await;
        }
        let out = client
            .batch_write_item()
            .request_items(table, requests)
            .send()
            .await
            .map_err(sdk_error)?;
        requests = out
            .unprocessed_items
            .and_then(|mut m| m.remove(table))
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

/// Reads one chunk of at most [`GET_CHUNK`] distinct keys from `table`, strongly
/// consistently, re-asking for the keys DynamoDB leaves unprocessed (throttling, the 16 MB
/// response cap) with backoff. Absent keys have no item in the answer.
pub async fn get_chunk(
    client: &Client,
    table: &str,
    mut keys: Vec<Item>,
) -> Result<Vec<Item>, StoreError> {
    let mut items = Vec::with_capacity(keys.len());
    for attempt in 0..BATCH_ATTEMPTS {
        if attempt > 0 {
            backoff(attempt).await;
        }
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(build_error)?;
        let out = client
            .batch_get_item()
            .request_items(table, request)
            .send()
            .await
            .map_err(sdk_error)?;
        items.extend(
            out.responses
                .and_then(|mut m| m.remove(table))
                .unwrap_or_default(),
        );
        keys = out
            .unprocessed_keys
            .and_then(|mut m| m.remove(table))
            .map(|k| k.keys)
            .unwrap_or_default();
        if keys.is_empty() {
            return Ok(items);
        }
    }
    Err(StoreError::Unavailable(format!(
        "DynamoDB left {} keys unprocessed after {BATCH_ATTEMPTS} attempts",
        keys.len()
    )))
}

/// Exponential backoff with full jitter before re-sending unprocessed batch entries:
/// ~25 ms, 50 ms, … capped at 2 s.
pub async fn backoff(attempt: u32) {
    let cap_ms = (25u64 << attempt.min(7)).min(2_000);
    let ms = rand::thread_rng().gen_range(cap_ms / 2..=cap_ms);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Maps an SDK failure: what a retry may cure (no connection, timeouts, throttling, server
/// errors) is `Unavailable`; the rest (validation, missing table, access denied) is `Internal`.
pub fn sdk_error<E>(e: SdkError<E>) -> StoreError
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

/// Maps a request that could not be built (a missing required field): a bug, `Internal`.
pub fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Internal(format!("DynamoDB request: {e}"))
}
