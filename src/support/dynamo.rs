//! Roles in DynamoDB, the durable record when it is configured (table `<prefix>roles`, rows
//! of the generic [`DynamoTable`] layout): `u#<uid>` / `roles` holds a user's roles (comma
//! separated), `role#<role>` / `<uid>` one holder of a role, so staff are one query.
//!
//! A change writes the user's row and then the holder rows; a change cut short between them
//! is completed by setting the roles again (every write is idempotent). Every node reads the
//! table on every check, so a change holds on every node once it is acknowledged.

use async_trait::async_trait;

use super::RoleStore;
use crate::{
    domain::{support::Role, UserId},
    storage::{
        dynamo::DynamoTable,
        table::{Order, Row, SkRange, SortedTable},
        StoreError,
    },
};

/// Every role (holder rows of the others are removed when roles are set).
const ROLES: [Role; 1] = [Role::Staff];
/// More holders than any desk has.
const ALL_HOLDERS: usize = 100_000;

/// [`RoleStore`] over a DynamoDB table.
pub struct DynamoRoleStore {
    table: DynamoTable,
}

impl DynamoRoleStore {
    /// Roles in `table`.
    pub fn new(table: DynamoTable) -> Self {
        Self { table }
    }
}

fn user_pk(uid: &UserId) -> String {
    format!("u#{uid}")
}

fn role_pk(role: Role) -> String {
    format!("role#{}", role.as_str())
}

#[async_trait]
impl RoleStore for DynamoRoleStore {
    async fn set_roles(&self, uid: &UserId, roles: &[Role]) -> Result<(), StoreError> {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        self.table
            .put_rows(vec![
                Row::new(user_pk(uid), "roles").with("roles", names.join(","))
            ])
            .await?;
        let held: Vec<Row> = roles
            .iter()
            .map(|role| Row::new(role_pk(*role), uid.as_str()))
            .collect();
        if !held.is_empty() {
            self.table.put_rows(held).await?;
        }
        let dropped: Vec<(String, String)> = ROLES
            .iter()
            .filter(|role| !roles.contains(role))
            .map(|role| (role_pk(*role), uid.to_string()))
            .collect();
        if !dropped.is_empty() {
            self.table.delete_rows(dropped).await?;
        }
        Ok(())
    }

    async fn roles(&self, uid: &UserId) -> Result<Vec<Role>, StoreError> {
        let rows = self
            .table
            .get_rows(vec![(user_pk(uid), "roles".to_owned())])
            .await?;
        let mut roles: Vec<Role> = rows
            .first()
            .map(|row| {
                row.str("roles")
                    .split(',')
                    .filter_map(|r| Role::parse(r).ok())
                    .collect()
            })
            .unwrap_or_default();
        roles.sort();
        Ok(roles)
    }

    async fn holders(&self, role: Role) -> Result<Vec<String>, StoreError> {
        let rows = self
            .table
            .query(
                &role_pk(role),
                SkRange::default(),
                Order::Ascending,
                ALL_HOLDERS,
            )
            .await?;
        Ok(rows.into_iter().map(|r| r.sk).collect())
    }
}
