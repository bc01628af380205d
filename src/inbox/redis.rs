//! Inboxes in Redis: a stream per user whose entry ids are the Seqs (`<Seq>-0`).

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use fred::{
    clients::Pool,
    interfaces::{KeysInterface, StreamsInterface},
    types::{scripts::Script, Value},
    util::redis_keyslot,
};
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{
    AppendOutcome, CarriedAppend, DedupeKey, Echo, InboxLimits, InboxPage, InboxStore, LogEntry,
    Logged, Rider, SwapOutcome,
};
use crate::{
    bus::{encode_live, redis_publish},
    domain::{Seq, UserId, WireEvent},
    storage::{
        embedded::internal,
        redis::{unavailable, user_channel, user_key},
        table::CarriedRows,
        StoreError,
    },
};

const APPEND_LUA: &str = include_str!("append.lua");
/// Most events in one append script call.
const MAX_BATCH: usize = 128;
/// Append script calls in flight at once; more events wait and join the next batch.
const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// Trims several users' inboxes in one call: KEYS[i] is an inbox stream, ARGV[i] the first
/// entry id it keeps.
const CONFIRM_LUA: &str = r#"
for i = 1, #KEYS do
  -- pcall: one bad key (say, of another type) must not fail the other users' confirms.
  redis.pcall('XTRIM', KEYS[i], 'MINID', ARGV[i])
end
return #KEYS
"#;
/// Compare-and-set of a group message's send claim (see `inbox::claims`): KEYS[1] the
/// claim, ARGV[1] the value it must hold ("" for none), ARGV[2] the new value ("" drops
/// the claim), ARGV[3] the idempotency window (s) for a new claim. Returns nil when
/// swapped, else what it holds ("" for nothing).
const SWAP_CLAIM_LUA: &str = r#"
local current = redis.call('GET', KEYS[1])
if (current or '') ~= ARGV[1] then
  return current or ''
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
elseif current then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return nil
"#;
/// Most confirmations in one script call: each is one cheap XTRIM.
const MAX_CONFIRM_BATCH: usize = 512;
/// Confirm script calls in flight at once.
const MAX_CONFIRM_BATCHES_IN_FLIGHT: usize = 2;

/// What became of one append, as the script answered it.
type ScriptAnswer = Result<Answer, StoreError>;

/// The script's answer for one event that it could handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Stored, or a duplicate.
    Appended(AppendOutcome),
    /// Its [`Rider::RefuseIfMember`] refused it: nothing was written.
    Refused,
}

/// One event waiting for the next batch.
struct PendingAppend {
    /// The receiver's seq counter and inbox.
    keys: [String; 2],
    /// The receiver's idempotency key, for an event that checks one (flag not "0").
    dedupe_key: Option<String>,
    /// The event's JSON, shared by the recipients of one group message.
    json: Arc<str>,
    sent_at: i64,
    /// The script's idempotency flag: "0", "1" or "2" (see append.lua).
    dedupe_flag: &'static str,
    /// The live copy for the acting user's other sockets inside the script: (channel,
    /// socket to skip, whether the user has other sockets on this node).
    echo: Option<(String, String, bool)>,
    /// On Redis Cluster, the live copy for the acting user's other sockets (channel,
    /// payload): it lives in another slot than the receiver's keys, so it is published after
    /// the script instead of inside it.
    echo_after: Option<(String, String)>,
    /// The event's call-log queue entry, written by the script (one Redis only).
    log: Option<String>,
    /// The event's call-log rows, written by the script (one Redis only).
    rows: Option<Arc<CarriedRows>>,
    /// A [`Rider::RefuseIfMember`]: the set (a key, declared) and the member.
    refuse: Option<(String, String)>,
    /// The [`Rider::SetIfAbsent`]s: key (declared), value, lifetime.
    sets: Vec<(String, String, u64)>,
    done: oneshot::Sender<ScriptAnswer>,
}

impl PendingAppend {
    /// Whether `next` can share this event's run in the script's arguments: everything but
    /// the receiver is the same (the recipients of one group message).
    fn shares_run_with(&self, next: &PendingAppend) -> bool {
        Arc::ptr_eq(&self.json, &next.json)
            && self.log.is_none()
            && next.log.is_none()
            && self.rows.is_none()
            && next.rows.is_none()
            && self.refuse.is_none()
            && next.refuse.is_none()
            && self.sets.is_empty()
            && next.sets.is_empty()
            && self.sent_at == next.sent_at
            && self.dedupe_flag == next.dedupe_flag
            && self.echo == next.echo
    }
}

/// One confirmation waiting for the next batch.
struct PendingConfirm {
    inbox: String,
    /// The first entry id the inbox keeps.
    min_id: String,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// [`InboxStore`] over Redis streams.
pub struct RedisInbox {
    pool: Pool,
    cluster: bool,
    swap_claim: Script,
    dedupe_window_secs: i64,
    /// How long a shared body is kept: as long as an inbox keeps events, and an hour for
    /// node clocks that disagree.
    shared_body_secs: i64,
    appends: mpsc::UnboundedSender<PendingAppend>,
    confirms: mpsc::UnboundedSender<PendingConfirm>,
    /// Whether appends can carry call-log entries (see [`RedisInbox::new`]).
    writes_log: bool,
}

impl RedisInbox {
    /// Inboxes in Redis, bounded by `limits`; `cluster` for Redis Cluster. Starts the tasks
    /// that batch appends and confirmations. `log_stream`: the call log's queue stream in
    /// the same Redis, which appends then write in the same script call (ignored on a
    /// cluster, where it lives in another slot than any inbox).
    pub fn new(pool: Pool, cluster: bool, limits: InboxLimits, log_stream: Option<String>) -> Self {
        let log_stream = log_stream.filter(|_| !cluster);
        let writes_log = log_stream.is_some();
        let (appends, append_queue) = mpsc::unbounded_channel();
        let appender = Arc::new(Appender {
            pool: pool.clone(),
            script: Script::from_lua(APPEND_LUA),
            bounds: [
                to_i64(limits.max_len).into(),
                to_i64(limits.max_age_secs.max(1)).into(),
                to_i64(limits.dedupe_window_secs.max(1)).into(),
                if cluster { "SPUBLISH" } else { "PUBLISH" }.into(),
                log_stream.unwrap_or_default().into(),
            ],
        });
        tokio::spawn(run_batches(
            append_queue,
            (MAX_BATCH, MAX_BATCHES_IN_FLIGHT),
            cluster,
            |item: &PendingAppend| redis_keyslot(item.keys[0].as_bytes()),
            move |items| {
                let appender = appender.clone();
                async move { appender.call(items).await }
            },
        ));
        let (confirms, confirm_queue) = mpsc::unbounded_channel();
        let confirmer = Arc::new(Confirmer {
            pool: pool.clone(),
            script: Script::from_lua(CONFIRM_LUA),
        });
        tokio::spawn(run_batches(
            confirm_queue,
            (MAX_CONFIRM_BATCH, MAX_CONFIRM_BATCHES_IN_FLIGHT),
            cluster,
            |item: &PendingConfirm| redis_keyslot(item.inbox.as_bytes()),
            move |items| {
                let confirmer = confirmer.clone();
                async move { confirmer.call(items).await }
            },
        ));
        Self {
            pool,
            cluster,
            swap_claim: Script::from_lua(SWAP_CLAIM_LUA),
            dedupe_window_secs: to_i64(limits.dedupe_window_secs.max(1)),
            shared_body_secs: to_i64(limits.max_age_secs.saturating_add(3600)),
            appends,
            confirms,
            writes_log,
        }
    }
}

/// Turns queued items into script calls, in batches: whatever queued up while earlier calls
/// were in flight (at most `max_in_flight` of `max_batch` items each) goes in the next one,
/// so an idle node adds no delay and a busy one pays one script call and one round trip for
/// many items. On Redis Cluster a script may only touch one hash slot, so a batch is split
/// per slot (`slot_of`) and the parts go out at once. Returns when the queue's senders are
/// gone.
async fn run_batches<T, F, Fut>(
    mut queue: mpsc::UnboundedReceiver<T>,
    (max_batch, max_in_flight): (usize, usize),
    cluster: bool,
    slot_of: fn(&T) -> u16,
    call: F,
) where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let call = Arc::new(call);
    let in_flight = Arc::new(Semaphore::new(max_in_flight));
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if queue.recv_many(&mut batch, max_batch).await == 0 {
            return; // the inbox was dropped
        }
        let items = std::mem::replace(&mut batch, Vec::with_capacity(max_batch));
        let call = call.clone();
        tokio::spawn(async move {
            if cluster {
                join_all(split_by_slot(items, slot_of).into_iter().map(|p| call(p))).await;
            } else {
                call(items).await;
            }
            drop(permit);
        });
    }
}

/// Turns queued confirmations into script calls: a node confirming the acks of thousands of
/// users at once (a large group's members, a few seconds after its message) sends a few
/// calls instead of one XTRIM round trip each.
struct Confirmer {
    pool: Pool,
    script: Script,
}

impl Confirmer {
    /// One script call for `items` (all in one slot on a cluster); answers each waiter.
    async fn call(&self, items: Vec<PendingConfirm>) {
        let mut keys = Vec::with_capacity(items.len());
        let mut args = Vec::with_capacity(items.len());
        let mut waiters = Vec::with_capacity(items.len());
        for item in items {
            keys.push(item.inbox);
            args.push(item.min_id);
            waiters.push(item.done);
        }
        let result: Result<i64, StoreError> = self
            .script
            .evalsha_with_reload(self.pool.next(), keys, args)
            .await
            .map_err(unavailable);
        let result = result.map(|_| ());
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// Turns queued appends into script calls (see [`run_batches`]).
struct Appender {
    pool: Pool,
    script: Script,
    /// The script's leading arguments, the same for every call.
    bounds: [Value; 5],
}

impl Appender {
    /// One script call for `items` (all in one slot on a cluster); answers each waiter.
    async fn call(&self, items: Vec<PendingAppend>) {
        let mut keys = Vec::with_capacity(items.len() * 3);
        // A run shares its flag, so its events all carry an idempotency key or none.
        // Each distinct JSON once (recipients of one group message share theirs), then the
        // events in runs of those that differ only in their receiver, each run naming its
        // JSON by index.
        let runs = runs_of(&items, PendingAppend::shares_run_with);
        let mut bodies: Vec<&Arc<str>> = Vec::new();
        let mut run_bodies = Vec::with_capacity(runs.len());
        for &(first, _) in &runs {
            let json = &items[first].json;
            let index = match bodies.iter().position(|b| Arc::ptr_eq(b, json)) {
                Some(index) => index,
                None => {
                    bodies.push(json);
                    bodies.len() - 1
                }
            };
            run_bodies.push(index);
        }
        let mut args =
            Vec::with_capacity(self.bounds.len() + 1 + bodies.len() + runs.len() * ARGS_PER_RUN);
        args.extend(self.bounds.iter().cloned());
        args.push(to_i64(bodies.len() as u64).into());
        args.extend(bodies.iter().map(|b| Value::from(&***b)));
        for (&(first, len), body) in runs.iter().zip(run_bodies) {
            let item = &items[first];
            let (echo_channel, skip, others_here) = item.echo.clone().unwrap_or_default();
            args.extend([
                to_i64(len as u64).into(),
                to_i64(body as u64 + 1).into(),
                item.sent_at.into(),
                item.dedupe_flag.into(),
                echo_channel.into(),
                skip.into(),
                item.log.as_deref().unwrap_or_default().into(),
                if others_here { "1" } else { "0" }.into(),
                item.refuse
                    .as_ref()
                    .map_or("", |(_, member)| member.as_str())
                    .into(),
                to_i64(item.sets.len() as u64).into(),
                to_i64(item.rows.as_ref().map_or(0, |r| r.rows.len()) as u64).into(),
                to_i64(
                    item.rows
                        .as_ref()
                        .and_then(|r| r.ages.as_ref())
                        .map_or(0, |(_, a)| a.len()) as u64,
                )
                .into(),
            ]);
            for (_, value, ttl) in &item.sets {
                args.extend([Value::from(value.as_str()), to_i64(*ttl).into()]);
            }
            if let Some(rows) = &item.rows {
                for row in &rows.rows {
                    let (version_attr, version) = match &row.version {
                        Some((attr, version)) => (attr.as_str(), version.to_string()),
                        None => ("", String::new()),
                    };
                    args.extend([
                        Value::from(row.sk.as_str()),
                        Value::from(row.attrs.as_str()),
                        Value::from(row.seq_attr.as_deref().unwrap_or_default()),
                        Value::from(version_attr),
                        Value::from(version),
                    ]);
                }
                for (partition, score) in rows.ages.iter().flat_map(|(_, ages)| ages) {
                    args.extend([Value::from(*score), Value::from(partition.as_str())]);
                }
            }
        }
        let mut waiters = Vec::with_capacity(items.len());
        for item in items {
            keys.extend(item.keys);
            keys.extend(item.dedupe_key);
            keys.extend(item.refuse.map(|(set, _)| set));
            keys.extend(item.sets.into_iter().map(|(key, _, _)| key));
            if let Some(rows) = &item.rows {
                for row in &rows.rows {
                    keys.extend([row.index_key.clone(), row.rows_key.clone()]);
                }
                keys.extend(rows.ages.as_ref().map(|(key, _)| key.clone()));
            }
            waiters.push((item.echo_after, item.done));
        }
        let result: Result<Vec<Value>, StoreError> = self
            .script
            .evalsha_with_reload(self.pool.next(), keys, args)
            .await
            .map_err(unavailable);
        let answers = match result {
            Ok(answers) if answers.len() == waiters.len() => answers,
            Ok(other) => {
                let e = format!("append script returned {} values", other.len());
                for (_, waiter) in waiters {
                    let _ = waiter.send(Err(StoreError::Internal(e.clone())));
                }
                return;
            }
            Err(e) => {
                for (_, waiter) in waiters {
                    let _ = waiter.send(Err(e.clone()));
                }
                return;
            }
        };
        let mut echoes = Vec::new();
        for ((echo, waiter), answer) in waiters.into_iter().zip(answers) {
            let outcome = outcome_of(answer);
            let stored = matches!(outcome, Ok(Answer::Appended(AppendOutcome::Stored { .. })));
            let _ = waiter.send(outcome);
            if let (Some((channel, payload)), true) = (echo, stored) {
                echoes.push(redis_publish(&self.pool, true, channel, payload));
            }
        }
        // After the acks, all at once: the events are stored and will reach their receivers,
        // and a lost echo only costs the sender's other tabs their live copy (history still
        // has it), so it neither delays nor fails a send.
        for result in join_all(echoes).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "live copy for the sender's other sockets lost");
            }
        }
    }
}

/// Script arguments per run of events (see append.lua), besides two per
/// [`Rider::SetIfAbsent`], five per carried call-log row and two per age registration.
const ARGS_PER_RUN: usize = 12;

/// Splits `items` into runs of consecutive items that `same_run` says belong with the run's
/// first one: (index of the first item, length), in order, covering every item once.
fn runs_of<T>(items: &[T], same_run: fn(&T, &T) -> bool) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match runs.last_mut() {
            Some((first, len)) if same_run(&items[*first], item) => *len += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

/// Groups a batch by hash slot, keeping the queue order inside a slot (one user's events
/// stay in order).
fn split_by_slot<T>(items: Vec<T>, slot_of: fn(&T) -> u16) -> Vec<Vec<T>> {
    let mut parts: HashMap<u16, Vec<T>> = HashMap::new();
    for item in items {
        parts.entry(slot_of(&item)).or_default().push(item);
    }
    parts.into_values().collect()
}

impl RedisInbox {
    /// Whether appends write `entry` in their own script call: a queue entry where the call
    /// log's stream is in this Redis, table rows wherever this is one Redis (the table's
    /// partitions are in other slots than any inbox on a cluster).
    fn writes(&self, entry: &LogEntry) -> bool {
        match entry {
            LogEntry::Queued { .. } => self.writes_log,
            LogEntry::Rows(_) => !self.cluster,
        }
    }

    /// Queues one append of `json` (the event's JSON without Seq) for the next batch.
    #[allow(clippy::too_many_arguments)] // each is one of the script's per-event inputs
    fn queue(
        &self,
        to: &UserId,
        json: &Arc<str>,
        sent_at: i64,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
        log: Option<&LogEntry>,
        riders: &[Rider],
    ) -> Result<oneshot::Receiver<ScriptAnswer>, StoreError> {
        let uid = to.as_str();
        let dedupe_key = dedupe.map(|d| user_key(uid, &format!("dd:{}", d.text())));
        let keys = [user_key(uid, "seq"), user_key(uid, "inbox")];
        let echo_channel = echo.map(|e| user_channel(e.user.as_str()));
        let skip_socket = echo.map(|e| e.skip_socket.as_str());
        let (echo, echo_after) = match (echo_channel, self.cluster) {
            // On a cluster the echo goes out after the script (see `echo_after`).
            (Some(channel), true) => (None, Some((channel, encode_live(skip_socket, json)))),
            (Some(channel), false) => (
                Some((
                    channel,
                    skip_socket.unwrap_or_default().to_owned(),
                    echo.is_some_and(|e| e.others_here),
                )),
                None,
            ),
            (None, _) => (None, None),
        };
        // "2": also remember the Seq for re-sends (1:1 only: the call log records group
        // messages without a per-recipient Seq, and a group fan-out is the hot path).
        let dedupe_flag = match dedupe {
            Some(d) if d.group.is_none() => "2",
            Some(_) => "1",
            None => "0",
        };
        let (mut refuse, mut sets) = (None, Vec::new());
        for rider in riders {
            if !self.can_carry(to, rider) {
                return Err(StoreError::Internal(format!(
                    "an append to {uid} cannot carry {rider:?}"
                )));
            }
            match rider {
                Rider::RefuseIfMember { key, member } => {
                    refuse = Some((key.clone(), member.clone()))
                }
                Rider::SetIfAbsent {
                    key,
                    value,
                    ttl_secs,
                } => sets.push((key.clone(), value.clone(), *ttl_secs)),
            }
        }
        let (done, outcome) = oneshot::channel();
        self.appends
            .send(PendingAppend {
                keys,
                dedupe_key,
                json: json.clone(),
                sent_at,
                dedupe_flag,
                echo,
                echo_after,
                log: match log {
                    Some(LogEntry::Queued { json }) => Some(json.clone()),
                    _ => None,
                },
                rows: match log {
                    Some(LogEntry::Rows(rows)) => Some(rows.clone()),
                    _ => None,
                },
                refuse,
                sets,
                done,
            })
            .map_err(|_| StoreError::Internal("inbox appender stopped".into()))?;
        Ok(outcome)
    }
}

/// The Redis key of the claim of a group message's send. It lives with the sender (one key
/// per send, in the sender's slot), apart from the per-receiver idempotency keys of 1:1
/// events (`dd:`).
pub fn send_claim_key(key: &DedupeKey) -> String {
    user_key(key.sender.as_str(), &format!("sc:{}", key.text()))
}

/// The Redis key of the shared body `key` (see `inbox::shared_body`); not a user's key:
/// the entries that name it are in many users' slots.
pub fn shared_body_key(key: &str) -> String {
    format!("wc:sb:{key}")
}

/// What the script answered for one append: its Seq (an integer), or for a duplicate the
/// idempotency key's value, "SentAt" or "SentAt:Seq" of the first send (a string: matched
/// by type, since a bare SentAt would also read as an integer).
fn outcome_of(answer: Value) -> ScriptAnswer {
    let first = match answer {
        Value::Integer(seq) => {
            return match u64::try_from(seq) {
                Ok(seq) if seq > 0 => Ok(Answer::Appended(AppendOutcome::Stored { seq })),
                _ => Err(StoreError::Internal(format!(
                    "append script returned Seq {seq}"
                ))),
            }
        }
        Value::String(first) => first.to_string(),
        Value::Bytes(first) => String::from_utf8_lossy(&first).into_owned(),
        Value::Array(refused)
            if refused.len() == 1 && refused[0].as_str().as_deref() == Some("refused") =>
        {
            return Ok(Answer::Refused);
        }
        Value::Array(failed) => {
            // {'error', message}: this event could not be stored (see append.lua).
            let message = failed.get(1).and_then(Value::as_str).map(|m| m.to_string());
            return Err(StoreError::Rejected(format!(
                "inbox append failed: {}",
                message.as_deref().unwrap_or("no reason given")
            )));
        }
        other => {
            return Err(StoreError::Internal(format!(
                "append script returned {other:?}"
            )))
        }
    };
    let (sent_at, first_seq) = first.split_once(':').unwrap_or((&first, ""));
    Ok(Answer::Appended(AppendOutcome::Duplicate {
        sent_at: sent_at.parse().unwrap_or(0),
        seq: first_seq.parse().ok().filter(|s| *s > 0),
    }))
}

/// Waits for the script's answer to one queued append.
async fn script_answer(answer: oneshot::Receiver<ScriptAnswer>) -> ScriptAnswer {
    answer
        .await
        .map_err(|_| StoreError::Internal("inbox appender dropped an append".into()))?
}

/// Waits for the script's answer to one queued append that carries no refusal.
async fn answer_of(answer: oneshot::Receiver<ScriptAnswer>) -> Result<AppendOutcome, StoreError> {
    match script_answer(answer).await? {
        Answer::Appended(outcome) => Ok(outcome),
        Answer::Refused => Err(StoreError::Internal(
            "an append without a refusal was refused".into(),
        )),
    }
}

#[async_trait]
impl InboxStore for RedisInbox {
    async fn append(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
    ) -> Result<AppendOutcome, StoreError> {
        let json: Arc<str> = serde_json::to_string(event).map_err(internal)?.into();
        answer_of(self.queue(to, &json, event.sent_at, dedupe, echo, None, &[])?).await
    }

    fn can_carry(&self, to: &UserId, rider: &Rider) -> bool {
        let key = match rider {
            Rider::RefuseIfMember { key, .. } | Rider::SetIfAbsent { key, .. } => key,
        };
        // A script may only touch its receiver's slot on a cluster; one Redis takes any key.
        !self.cluster
            || redis_keyslot(key.as_bytes())
                == redis_keyslot(user_key(to.as_str(), "seq").as_bytes())
    }

    async fn append_carrying(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
        log: Option<&LogEntry>,
        riders: &[Rider],
    ) -> Result<CarriedAppend, StoreError> {
        let log = log.filter(|entry| self.writes(entry));
        let json: Arc<str> = serde_json::to_string(event).map_err(internal)?.into();
        let queued = self.queue(to, &json, event.sent_at, dedupe, echo, log, riders)?;
        Ok(match script_answer(queued).await? {
            Answer::Refused => CarriedAppend::Refused,
            // A duplicate wrote nothing, its log entry included.
            Answer::Appended(outcome @ AppendOutcome::Stored { .. }) if log.is_some() => {
                CarriedAppend::Done(outcome, Logged::Yes)
            }
            Answer::Appended(outcome) => CarriedAppend::Done(outcome, Logged::No),
        })
    }

    async fn append_logged(
        &self,
        to: &UserId,
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
        log: &LogEntry,
    ) -> Result<(AppendOutcome, Logged), StoreError> {
        if !self.writes(log) {
            return Ok((self.append(to, event, dedupe, echo).await?, Logged::No));
        }
        let json: Arc<str> = serde_json::to_string(event).map_err(internal)?.into();
        let outcome =
            answer_of(self.queue(to, &json, event.sent_at, dedupe, echo, Some(log), &[])?).await?;
        // A duplicate wrote nothing, its log entry included.
        let logged = match outcome {
            AppendOutcome::Stored { .. } => Logged::Yes,
            AppendOutcome::Duplicate { .. } => Logged::No,
        };
        Ok((outcome, logged))
    }

    async fn append_to_each(
        &self,
        recipients: &[UserId],
        event: &WireEvent,
        dedupe: Option<&DedupeKey>,
        echo: Option<&Echo>,
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        // One JSON for every recipient: the batches carry it once per script call.
        let json: Arc<str> = match serde_json::to_string(event) {
            Ok(json) => json.into(),
            Err(e) => return vec![Err(internal(e)); recipients.len()],
        };
        let answers: Vec<_> = recipients
            .iter()
            .enumerate()
            .map(|(i, to)| {
                self.queue(
                    to,
                    &json,
                    event.sent_at,
                    dedupe,
                    Echo::with_first(echo, i),
                    None,
                    &[],
                )
            })
            .collect();
        join_all(answers.into_iter().map(|answer| async move {
            match answer {
                Ok(answer) => answer_of(answer).await,
                Err(e) => Err(e),
            }
        }))
        .await
    }

    async fn put_shared_body(&self, key: &str, body: &str) -> Result<(), StoreError> {
        let expiry = fred::types::Expiration::EX(self.shared_body_secs);
        let () = self
            .pool
            .next()
            .set(shared_body_key(key), body, Some(expiry), None, false)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn read_shared_body(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.pool
            .next()
            .get(shared_body_key(key))
            .await
            .map_err(unavailable)
    }

    async fn read_send_claim(&self, key: &DedupeKey) -> Result<Option<String>, StoreError> {
        self.pool
            .next()
            .get(send_claim_key(key))
            .await
            .map_err(unavailable)
    }

    async fn swap_send_claim(
        &self,
        key: &DedupeKey,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<SwapOutcome, StoreError> {
        let held: Option<String> = self
            .swap_claim
            .evalsha_with_reload(
                self.pool.next(),
                vec![send_claim_key(key)],
                vec![
                    Value::from(expected.unwrap_or_default()),
                    Value::from(new.unwrap_or_default()),
                    Value::from(self.dedupe_window_secs),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(match held {
            None => SwapOutcome::Swapped,
            Some(held) if held.is_empty() => SwapOutcome::Holds(None),
            Some(held) => SwapOutcome::Holds(Some(held)),
        })
    }

    async fn confirm(&self, user: &str, upto: Seq) -> Result<(), StoreError> {
        let (done, confirmed) = oneshot::channel();
        self.confirms
            .send(PendingConfirm {
                inbox: user_key(user, "inbox"),
                min_id: format!("{}-0", upto.saturating_add(1)),
                done,
            })
            .map_err(|_| StoreError::Internal("inbox confirmer stopped".into()))?;
        confirmed
            .await
            .map_err(|_| StoreError::Internal("inbox confirmer dropped a confirm".into()))?
    }

    async fn read_after(
        &self,
        user: &str,
        after: Seq,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        let start = format!("{}-0", after.saturating_add(1));
        // One round trip, counter first: Redis runs a connection's commands in order, so
        // every Seq up to the head it reads was already in the stream when XRANGE ran. Both
        // keys share the user's hash slot, so on a cluster they go to one connection.
        let pipeline = self.pool.next().pipeline();
        let () = pipeline
            .get(user_key(user, "seq"))
            .await
            .map_err(unavailable)?;
        let () = pipeline
            .xrange(
                user_key(user, "inbox"),
                start,
                "+",
                Some(u64::try_from(limit).unwrap_or(u64::MAX)),
            )
            .await
            .map_err(unavailable)?;
        let (head, entries): (Option<Seq>, Vec<(String, Vec<(String, String)>)>) =
            pipeline.all().await.map_err(unavailable)?;
        let full = entries.len() >= limit;
        let mut events = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let seq: Seq = id
                .split_once('-')
                .and_then(|(s, _)| s.parse().ok())
                .ok_or_else(|| StoreError::Internal(format!("bad inbox id {id}")))?;
            let Some((_, json)) = fields.into_iter().find(|(k, _)| k == "e") else {
                continue;
            };
            let event: WireEvent = serde_json::from_str(&json).map_err(internal)?;
            events.push((seq, event));
        }
        Ok(InboxPage {
            events,
            head: head.unwrap_or(0),
            full,
        })
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use fred::types::Value;

    use super::{outcome_of, runs_of, Answer, AppendOutcome};

    #[test]
    fn script_answers_are_told_apart_by_type() {
        assert!(matches!(
            outcome_of(Value::Integer(7)),
            Ok(Answer::Appended(AppendOutcome::Stored { seq: 7 }))
        ));
        // A duplicate of a group message: the key holds only the first SentAt, which is all
        // digits and must not be taken for a Seq.
        assert!(matches!(
            outcome_of(Value::String("1795469794597".into())),
            Ok(Answer::Appended(AppendOutcome::Duplicate {
                sent_at: 1795469794597,
                seq: None
            }))
        ));
        assert!(matches!(
            outcome_of(Value::String("1795469794597:12".into())),
            Ok(Answer::Appended(AppendOutcome::Duplicate {
                sent_at: 1795469794597,
                seq: Some(12)
            }))
        ));
        assert!(matches!(
            outcome_of(Value::Bytes("1795469794597:12".into())),
            Ok(Answer::Appended(AppendOutcome::Duplicate {
                sent_at: 1795469794597,
                seq: Some(12)
            }))
        ));
        assert_eq!(
            outcome_of(Value::Array(vec!["refused".into()])).ok(),
            Some(Answer::Refused)
        );
        assert!(outcome_of(Value::Integer(0)).is_err());
        assert!(outcome_of(Value::Null).is_err());
        match outcome_of(Value::Array(vec![
            "error".into(),
            "WRONGTYPE Operation against a key holding the wrong kind of value".into(),
        ])) {
            Err(crate::storage::StoreError::Rejected(message)) => {
                assert!(message.contains("WRONGTYPE"), "{message}")
            }
            other => panic!("a failed append must be an error, got {other:?}"),
        }
    }

    #[test]
    fn runs_cover_every_item_once_in_order_and_break_where_items_differ() {
        let same = |a: &(&str, u8), b: &(&str, u8)| a.0 == b.0;
        // A 1:1 message, a group message to four members, another 1:1, the group again.
        let items = [
            ("a", 0),
            ("g", 1),
            ("g", 2),
            ("g", 3),
            ("g", 4),
            ("b", 0),
            ("g", 5),
        ];
        assert_eq!(runs_of(&items, same), vec![(0, 1), (1, 4), (5, 1), (6, 1)]);
        assert_eq!(runs_of::<(&str, u8)>(&[], same), vec![]);
    }
}
