//! Tickets and roles in Redis (one Redis or Redis Cluster).
//!
//! Key layout (every key carries the hash tag `{support}`, so on Redis Cluster they share a
//! slot and one script moves a ticket and its index entries together; a support desk's
//! traffic is a few changes per conversation, far below what one shard serves):
//! - `wc:{support}:t:<gid>`     hash: `ticket`, `state`, `customer`, `topic`, `staff`,
//!   `openedAt`, `claimedAt`, `closedAt`, `member` (its index member)
//! - `wc:{support}:i:<state>`   sorted set (all scores 0, read by lex): `Ticket::index_member`
//! - `wc:{support}:r:<uid>`     set: the user's roles
//! - `wc:{support}:role:<role>` set: the role's holders
//!
//! A claim is one script: it reads the state and moves it from open to claimed only if it is
//! still open, so of any number of claims on any nodes exactly one wins.

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{HashesInterface, SetsInterface},
    types::scripts::Script,
};

use super::{ascending, ClaimOutcome, CloseOutcome, RoleStore, Ticket, TicketStore};
use crate::{
    domain::{
        support::{Role, TicketState, Topic},
        GroupId, UserId,
    },
    storage::{embedded::internal, redis::unavailable, StoreError},
};

/// KEYS: ticket, open index. ARGV: the ticket's fields as name/value pairs, then its member.
/// Answers `new` or `exists`, then the stored hash.
const OPEN_LUA: &str = r"
local existed = redis.call('EXISTS', KEYS[1]) == 1
if not existed then
  redis.call('HSET', KEYS[1], unpack(ARGV))
  redis.call('ZADD', KEYS[2], 0, redis.call('HGET', KEYS[1], 'member'))
end
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, existed and 'exists' or 'new')
return all
";

/// KEYS: ticket, open index, claimed index. ARGV: staff, at. Answers the outcome, then the
/// stored hash.
const CLAIM_LUA: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown'} end
local outcome = state
if state == 'open' then
  redis.call('HSET', KEYS[1], 'state', 'claimed', 'staff', ARGV[1], 'claimedAt', ARGV[2])
  local member = redis.call('HGET', KEYS[1], 'member')
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZADD', KEYS[3], 0, member)
  outcome = 'won'
elseif state == 'claimed' and redis.call('HGET', KEYS[1], 'staff') == ARGV[1] then
  outcome = 'held'
end
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, outcome)
return all
";

/// KEYS: ticket, open index, claimed index, closed index. ARGV: at. Answers the outcome,
/// then the stored hash.
const CLOSE_LUA: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown'} end
local outcome = 'already'
if state ~= 'closed' then
  redis.call('HSET', KEYS[1], 'state', 'closed', 'closedAt', ARGV[1])
  local member = redis.call('HGET', KEYS[1], 'member')
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZADD', KEYS[4], 0, member)
  outcome = 'closed'
end
local all = redis.call('HGETALL', KEYS[1])
table.insert(all, 1, outcome)
return all
";

/// KEYS: the user's roles, then each role's holders (in `Role` order). ARGV: uid, then
/// `1`/`0` per role.
const SET_ROLES_LUA: &str = r"
redis.call('DEL', KEYS[1])
for i = 2, #KEYS do
  local role = string.match(KEYS[i], 'role:(.*)$')
  if ARGV[i] == '1' then
    redis.call('SADD', KEYS[1], role)
    redis.call('SADD', KEYS[i], ARGV[1])
  else
    redis.call('SREM', KEYS[i], ARGV[1])
  end
end
return 1
";

/// KEYS: a state's index. ARGV: `asc` or `desc`, the member to start after ("" for the
/// start), the most members to answer.
const LIST_LUA: &str = r"
if ARGV[1] == 'asc' then
  local min = ARGV[2] == '' and '-' or ('(' .. ARGV[2])
  return redis.call('ZRANGEBYLEX', KEYS[1], min, '+', 'LIMIT', 0, tonumber(ARGV[3]))
end
local max = ARGV[2] == '' and '+' or ('(' .. ARGV[2])
return redis.call('ZREVRANGEBYLEX', KEYS[1], max, '-', 'LIMIT', 0, tonumber(ARGV[3]))
";

/// Every role, in the order [`SET_ROLES_LUA`] takes them.
const ROLES: [Role; 1] = [Role::Staff];

fn ticket_key(gid: &str) -> String {
    format!("wc:{{support}}:t:{gid}")
}

fn index_key(state: TicketState) -> String {
    format!("wc:{{support}}:i:{state}")
}

fn roles_key(uid: &UserId) -> String {
    format!("wc:{{support}}:r:{uid}")
}

fn holders_key(role: Role) -> String {
    format!("wc:{{support}}:role:{}", role.as_str())
}

/// [`TicketStore`] and [`RoleStore`] over Redis.
#[derive(Clone)]
pub struct RedisSupportStore {
    pool: Pool,
    open: Script,
    claim: Script,
    close: Script,
    set_roles: Script,
    list: Script,
}

impl RedisSupportStore {
    /// A store over `pool`.
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            open: Script::from_lua(OPEN_LUA),
            claim: Script::from_lua(CLAIM_LUA),
            close: Script::from_lua(CLOSE_LUA),
            set_roles: Script::from_lua(SET_ROLES_LUA),
            list: Script::from_lua(LIST_LUA),
        }
    }

    async fn run(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<(String, Option<Ticket>), StoreError> {
        let answer: Vec<String> = script
            .evalsha_with_reload(self.pool.next(), keys, args)
            .await
            .map_err(unavailable)?;
        let mut fields = answer.into_iter();
        let outcome = fields
            .next()
            .ok_or_else(|| internal("empty support script answer"))?;
        let rest: Vec<String> = fields.collect();
        let ticket = if rest.is_empty() {
            None
        } else {
            Some(from_fields(rest)?)
        };
        Ok((outcome, ticket))
    }
}

/// A ticket from its hash's name/value pairs.
fn from_fields(pairs: Vec<String>) -> Result<Ticket, StoreError> {
    let mut map = std::collections::HashMap::new();
    let mut it = pairs.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        map.insert(k, v);
    }
    let text = |name: &str| map.get(name).cloned().unwrap_or_default();
    let int = |name: &str| map.get(name).and_then(|v| v.parse::<i64>().ok());
    let uid = |name: &str| {
        map.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| UserId::parse(v).map_err(|e| internal(e.message)))
            .transpose()
    };
    Ok(Ticket {
        ticket: GroupId::parse(&text("ticket")).map_err(|e| internal(e.message))?,
        state: TicketState::parse(&text("state")).map_err(|e| internal(e.message))?,
        customer: uid("customer")?.ok_or_else(|| internal("ticket without a customer"))?,
        topic: Topic::parse(&text("topic")).map_err(|e| internal(e.message))?,
        staff: uid("staff")?,
        opened_at: int("openedAt").unwrap_or(0),
        claimed_at: int("claimedAt"),
        closed_at: int("closedAt"),
    })
}

fn into_ticket(ticket: Option<Ticket>) -> Result<Ticket, StoreError> {
    ticket.ok_or_else(|| internal("support script answered no ticket"))
}

#[async_trait]
impl TicketStore for RedisSupportStore {
    async fn open(&self, ticket: &Ticket) -> Result<Ticket, StoreError> {
        let args = vec![
            "ticket".to_owned(),
            ticket.ticket.to_string(),
            "state".to_owned(),
            ticket.state.as_str().to_owned(),
            "customer".to_owned(),
            ticket.customer.to_string(),
            "topic".to_owned(),
            ticket.topic.as_str().to_owned(),
            "openedAt".to_owned(),
            ticket.opened_at.to_string(),
            "member".to_owned(),
            ticket.index_member(),
        ];
        let keys = vec![
            ticket_key(ticket.ticket.as_str()),
            index_key(TicketState::Open),
        ];
        let (_, stored) = self.run(&self.open, keys, args).await?;
        into_ticket(stored)
    }

    async fn get(&self, gid: &GroupId) -> Result<Option<Ticket>, StoreError> {
        let pairs: std::collections::HashMap<String, String> = self
            .pool
            .hgetall(ticket_key(gid.as_str()))
            .await
            .map_err(unavailable)?;
        if pairs.is_empty() {
            return Ok(None);
        }
        from_fields(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()).map(Some)
    }

    async fn claim(
        &self,
        gid: &GroupId,
        staff: &UserId,
        at: i64,
    ) -> Result<ClaimOutcome, StoreError> {
        let keys = vec![
            ticket_key(gid.as_str()),
            index_key(TicketState::Open),
            index_key(TicketState::Claimed),
        ];
        let (outcome, ticket) = self
            .run(&self.claim, keys, vec![staff.to_string(), at.to_string()])
            .await?;
        Ok(match outcome.as_str() {
            "unknown" => ClaimOutcome::Unknown,
            "won" => ClaimOutcome::Won(into_ticket(ticket)?),
            "held" => ClaimOutcome::Held(into_ticket(ticket)?),
            "closed" => ClaimOutcome::Closed(into_ticket(ticket)?),
            _ => ClaimOutcome::Taken(into_ticket(ticket)?),
        })
    }

    async fn close(&self, gid: &GroupId, at: i64) -> Result<CloseOutcome, StoreError> {
        let keys = vec![
            ticket_key(gid.as_str()),
            index_key(TicketState::Open),
            index_key(TicketState::Claimed),
            index_key(TicketState::Closed),
        ];
        let (outcome, ticket) = self.run(&self.close, keys, vec![at.to_string()]).await?;
        Ok(match outcome.as_str() {
            "unknown" => CloseOutcome::Unknown,
            "closed" => CloseOutcome::Closed(into_ticket(ticket)?),
            _ => CloseOutcome::AlreadyClosed(into_ticket(ticket)?),
        })
    }

    async fn list(
        &self,
        state: TicketState,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Ticket>, StoreError> {
        let direction = if ascending(state) { "asc" } else { "desc" };
        let members: Vec<String> = self
            .list
            .evalsha_with_reload(
                self.pool.next(),
                vec![index_key(state)],
                vec![
                    direction.to_owned(),
                    after.unwrap_or_default().to_owned(),
                    limit.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(members.len());
        for member in members {
            let Some((_, gid)) = member.split_once('|') else {
                continue;
            };
            if let Ok(gid) = GroupId::parse(gid) {
                if let Some(ticket) = self.get(&gid).await? {
                    out.push(ticket);
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl RoleStore for RedisSupportStore {
    async fn set_roles(&self, uid: &UserId, roles: &[Role]) -> Result<(), StoreError> {
        let mut keys = vec![roles_key(uid)];
        let mut args = vec![uid.to_string()];
        for role in ROLES {
            keys.push(holders_key(role));
            args.push(if roles.contains(&role) { "1" } else { "0" }.to_owned());
        }
        let _: i64 = self
            .set_roles
            .evalsha_with_reload(self.pool.next(), keys, args)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn roles(&self, uid: &UserId) -> Result<Vec<Role>, StoreError> {
        let names: Vec<String> = self
            .pool
            .smembers(roles_key(uid))
            .await
            .map_err(unavailable)?;
        let mut roles: Vec<Role> = names.iter().filter_map(|n| Role::parse(n).ok()).collect();
        roles.sort();
        Ok(roles)
    }

    async fn holders(&self, role: Role) -> Result<Vec<String>, StoreError> {
        let mut holders: Vec<String> = self
            .pool
            .smembers(holders_key(role))
            .await
            .map_err(unavailable)?;
        holders.sort();
        Ok(holders)
    }
}
