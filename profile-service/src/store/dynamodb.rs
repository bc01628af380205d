//! Profiles in DynamoDB, the production system of record.
//!
//! Key design: one table `<prefix>profiles`, partition key `uid` (S), no sort key: every
//! access is by uid (get, batch get) except the paged full scan of the legacy `/getall`.
//! Attributes: `name` `status` `avatarUrl` (S), `updatedAt` (N, unix ms), `ver` (N, raised by
//! `ADD` in the same UpdateItem that writes the fields, so versions are strictly increasing
//! per uid without a read-modify-write). Reads are strongly consistent, so a read after an
//! acknowledged update sees it (DynamoDB's default eventually consistent read would not).

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    error::{DisplayErrorContext, SdkError},
    operation::update_item::UpdateItemError,
    types::{AttributeValue, KeyType, ReturnValue, ReturnValuesOnConditionCheckFailure},
    Client,
};
use webchat_core::{
    dynamo::{self, Item, GET_CHUNK},
    ids::UserId,
};

use super::{Page, ProfileStore, StoreError};
use crate::profile::{Change, Profile, Versioned};

/// Conditional writes tried before a constantly changing profile counts as unavailable.
const PUT_ATTEMPTS: u32 = 5;

/// [`ProfileStore`] over one DynamoDB table.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn unavailable<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: SdkError<E, R>,
) -> StoreError {
    StoreError::Unavailable(format!("dynamodb: {}", DisplayErrorContext(&e)))
}

impl DynamoStore {
    /// A client for `endpoint` (region and credentials from the usual AWS env; us-east-1 and
    /// dummy static credentials when nothing is configured) and the table, created if absent.
    pub async fn connect(endpoint: &str, table: String) -> Result<Self, StoreError> {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(15))
            .build();
        let config = dynamo::sdk_config(
            endpoint,
            timeouts,
            aws_config::retry::RetryConfig::standard(),
        )
        .await;
        let client = Client::new(&config);
        dynamo::ensure_table(&client, &table, &[("uid", KeyType::Hash)]).await?;
        Ok(Self { client, table })
    }
}

fn key(uid: &str) -> Item {
    HashMap::from([("uid".to_owned(), AttributeValue::S(uid.to_owned()))])
}

/// An item back into a record; a missing or mistyped attribute is corrupt data.
fn decode(item: &Item) -> Result<Versioned, StoreError> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(s)) => Ok(s.clone()),
        // Written empty by no one, but tolerated: absent text reads as empty.
        None => Ok(String::new()),
        Some(_) => Err(StoreError::Internal(format!("profile item: {name} not S"))),
    };
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(n)) => n
            .parse::<i64>()
            .map_err(|_| StoreError::Internal(format!("profile item: bad {name}"))),
        _ => Err(StoreError::Internal(format!("profile item: {name} not N"))),
    };
    let version = u64::try_from(number("ver")?)
        .map_err(|_| StoreError::Internal("profile item: negative ver".into()))?;
    Ok(Versioned {
        profile: Profile {
            uid: text("uid")?,
            name: text("name")?,
            status: text("status")?,
            avatar_url: text("avatarUrl")?,
            updated_at: number("updatedAt")?,
        },
        version,
    })
}

impl DynamoStore {
    /// One conditional UpdateItem at `at`: the stored record, or `Err(stored updatedAt)` when
    /// the stored profile is not older than `at`.
    async fn update_once(
        &self,
        uid: &UserId,
        change: &Change,
        at: i64,
    ) -> Result<Result<Versioned, i64>, StoreError> {
        // `None` fields keep their value; `if_not_exists` makes them empty on a new item.
        let status = if change.status.is_some() {
            "#s = :s"
        } else {
            "#s = if_not_exists(#s, :empty)"
        };
        let avatar = if change.avatar_url.is_some() {
            "#a = :a"
        } else {
            "#a = if_not_exists(#a, :empty)"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(uid.as_str())))
            .update_expression(format!(
                "SET #n = :n, #t = :t, {status}, {avatar} ADD #v :one"
            ))
            .condition_expression("attribute_not_exists(#t) OR #t < :t")
            // `name` and `status` are DynamoDB reserved words: always use placeholders.
            .expression_attribute_names("#n", "name")
            .expression_attribute_names("#s", "status")
            .expression_attribute_names("#a", "avatarUrl")
            .expression_attribute_names("#t", "updatedAt")
            .expression_attribute_names("#v", "ver")
            .expression_attribute_values(":n", AttributeValue::S(change.name.clone()))
            .expression_attribute_values(":t", AttributeValue::N(at.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(s) = &change.status {
            request = request.expression_attribute_values(":s", AttributeValue::S(s.clone()));
        }
        if let Some(a) = &change.avatar_url {
            request = request.expression_attribute_values(":a", AttributeValue::S(a.clone()));
        }
        if change.status.is_none() || change.avatar_url.is_none() {
            // DynamoDB refuses unused placeholders, so `:empty` only when referenced.
            request =
                request.expression_attribute_values(":empty", AttributeValue::S(String::new()));
        }
        match request.send().await {
            Ok(out) => {
                let item = out.attributes().ok_or_else(|| {
                    StoreError::Internal("UpdateItem returned no attributes".into())
                })?;
                Ok(Ok(decode(item)?))
            }
            Err(SdkError::ServiceError(e)) => match e.err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    let stored = failed.item().map(decode).transpose()?;
                    Ok(Err(stored.map_or(at, |v| v.profile.updated_at)))
                }
                _ => Err(unavailable(SdkError::ServiceError(e))),
            },
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[async_trait]
impl ProfileStore for DynamoStore {
    fn kind(&self) -> &'static str {
        "dynamodb"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, uid: &UserId) -> Result<Option<Versioned>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(uid.as_str())))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item().map(decode).transpose()
    }

    async fn get_many(&self, uids: &[UserId]) -> Result<Vec<Versioned>, StoreError> {
        let mut found = Vec::with_capacity(uids.len());
        for chunk in uids.chunks(GET_CHUNK) {
            let keys = chunk.iter().map(|u| key(u.as_str())).collect();
            // Re-asks for what DynamoDB leaves unprocessed (throttling, 16 MB response cap).
            for item in dynamo::get_chunk(&self.client, &self.table, keys).await? {
                found.push(decode(&item)?);
            }
        }
        Ok(found)
    }

    async fn put(
        &self,
        uid: &UserId,
        change: &Change,
        updated_at: i64,
    ) -> Result<Versioned, StoreError> {
        // `updatedAt` must grow with every write (subscribers order events by it), even when
        // clocks of two instances disagree: the write is conditional on the stored value being
        // older, and a refusal retries just after the stored value.
        let mut at = updated_at;
        for _ in 0..PUT_ATTEMPTS {
            match self.update_once(uid, change, at).await? {
                Ok(record) => return Ok(record),
                Err(stored) => at = at.max(stored.saturating_add(1)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "dynamodb: profile {uid} kept changing under {PUT_ATTEMPTS} attempts"
        )))
    }

    async fn scan_page(&self, cursor: Option<String>, limit: usize) -> Result<Page, StoreError> {
        let limit = i32::try_from(limit.max(1)).unwrap_or(i32::MAX);
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(limit)
            .set_exclusive_start_key(cursor.map(|uid| key(&uid)))
            .send()
            .await
            .map_err(unavailable)?;
        let items = out
            .items()
            .iter()
            .map(|item| decode(item).map(|v| v.profile))
            .collect::<Result<Vec<_>, _>>()?;
        // The table's only key is `uid`, so LastEvaluatedKey is fully described by it.
        let next = match out.last_evaluated_key().and_then(|k| k.get("uid")) {
            Some(AttributeValue::S(uid)) => Some(uid.clone()),
            _ => None,
        };
        Ok(Page { items, next })
    }
}
