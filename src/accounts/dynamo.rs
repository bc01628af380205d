//! Accounts in DynamoDB (the system of record when DynamoDB is configured, so losing Redis
//! loses no account and no logout).
//!
//! Table `<prefix>accounts`, rows of the generic [`DynamoTable`] layout:
//! - `accounts` / `<uid>`: the account (one partition, so the address book is a range query;
//!   signups are far too rare for one partition to be a bottleneck);
//! - `revoked` / `<jti>`: a revoked token id with its expiry.

use async_trait::async_trait;

use super::{Account, AccountStore};
use crate::storage::{
    dynamo::DynamoTable,
    embedded::internal,
    table::{Order, Row, SkRange, SortedTable},
    StoreError,
};

const ACCOUNTS: &str = "accounts";
const REVOKED: &str = "revoked";

/// [`AccountStore`] over DynamoDB.
pub struct DynamoAccountStore {
    table: DynamoTable,
}

impl DynamoAccountStore {
    /// A store over `table`.
    pub fn new(table: DynamoTable) -> Self {
        Self { table }
    }
}

fn to_row(account: &Account) -> Result<Row, StoreError> {
    let mut row = Row::new(ACCOUNTS, &account.uid);
    match serde_json::to_value(account).map_err(internal)? {
        serde_json::Value::Object(attrs) => row.attrs = attrs,
        _ => return Err(StoreError::Internal("account is not a JSON object".into())),
    }
    Ok(row)
}

fn from_row(row: Row) -> Result<Account, StoreError> {
    serde_json::from_value(serde_json::Value::Object(row.attrs)).map_err(internal)
}

/// The largest string below every string that starts with `prefix` (uids use only ASCII
/// below DEL), so an exclusive lower bound at it includes `prefix` itself.
fn just_below(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    let last = chars.pop()?;
    let below = char::from_u32(u32::from(last).checked_sub(1)?)?;
    let mut bound: String = chars.into_iter().collect();
    bound.push(below);
    bound.push('\u{7f}');
    Some(bound)
}

#[async_trait]
impl AccountStore for DynamoAccountStore {
    async fn insert(&self, account: &Account) -> Result<bool, StoreError> {
        self.table.insert_if_absent(&to_row(account)?).await
    }

    async fn get(&self, uid: &str) -> Result<Option<Account>, StoreError> {
        let rows = self
            .table
            .get_rows(vec![(ACCOUNTS.to_owned(), uid.to_owned())])
            .await?;
        rows.into_iter().next().map(from_row).transpose()
    }

    async fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), StoreError> {
        self.table
            .put_rows(vec![Row::new(REVOKED, jti).with("exp", expires_at)])
            .await
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let rows = self
            .table
            .get_rows(vec![(REVOKED.to_owned(), jti.to_owned())])
            .await?;
        Ok(!rows.is_empty())
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Account>, StoreError> {
        let lower = match after {
            Some(after) if after >= prefix => Some(after.to_owned()),
            _ => just_below(prefix),
        };
        let range = SkRange {
            after: lower,
            before: Some(format!("{prefix}\u{7f}")),
        };
        let rows = self
            .table
            .query(ACCOUNTS, range, Order::Ascending, limit)
            .await?;
        rows.into_iter()
            .filter(|r| r.sk.starts_with(prefix))
            .map(from_row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::just_below;

    #[test]
    fn the_bound_below_a_prefix_admits_the_prefix_and_its_extensions_only() {
        let bound = just_below("bob").expect("bound");
        assert!(bound.as_str() < "bob" && bound.as_str() < "bob.x");
        assert!(bound.as_str() > "boa" && bound.as_str() > "boa_zz");
        assert_eq!(just_below(""), None);
    }
}
