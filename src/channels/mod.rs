//! Channels (contract §9): public topics and server broadcast, with one bounded history per
//! channel and recovery by `{offset, epoch}`.
//!
//! Owns channel settings, the [`ChannelStore`] trait (embedded and Redis implementations
//! side by side), the [`ChannelService`] (who may read and publish, bounds, idempotency) and
//! the feed messages that carry publications and presence changes between nodes. Does not
//! own sockets: the gateway's channel hub hands the feed to local subscribers.
//!
//! A channel is not a group: a publication is stored once (in the channel's history), never
//! per reader, and travels once per node over the channel's own pub/sub channel.

mod embedded;
mod names;
mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use self::embedded::EmbeddedChannelStore;
pub use self::names::ChannelName;
pub use self::redis::{LocalChannelFeed, RedisChannelFeed, RedisChannelStore};
use crate::{
    domain::{now_millis, ChatError, ErrorCode, MsgId, UserId},
    storage::StoreError,
};

/// The name of the channel that exists from the start (unless switched off).
pub const GENERAL: &str = "general";
/// Most publications a channel's history may keep.
pub const MAX_HISTORY_SIZE: u32 = 10_000;
/// Longest a channel may keep a publication: a year.
pub const MAX_HISTORY_TTL_SECS: u64 = 365 * 24 * 3600;
/// Largest page of `GET /channels/{name}/publications`.
pub const MAX_PAGE: usize = 1000;

/// Who may publish on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishPolicy {
    /// Any subscriber (a signed-in user, never a guest).
    Members,
    /// Only the REST publish API (admin token or a service key): a stock feed.
    Server,
}

/// A channel's settings, as the admin API takes and answers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelSettings {
    /// Who may publish.
    #[serde(default = "members")]
    pub publish: PublishPolicy,
    /// Whether guests may subscribe (and read its history).
    #[serde(default)]
    pub guests: bool,
    /// How many publications the history keeps (0–10,000).
    #[serde(default = "default_history_size")]
    pub history_size: u32,
    /// How long the history keeps a publication, in seconds.
    #[serde(default = "default_history_ttl")]
    pub history_ttl_secs: u64,
    /// Whether subscribers are told who joins and leaves, and `/presence` answers.
    #[serde(default)]
    pub presence: bool,
}

fn members() -> PublishPolicy {
    PublishPolicy::Members
}
fn default_history_size() -> u32 {
    100
}
fn default_history_ttl() -> u64 {
    86_400
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            publish: PublishPolicy::Members,
            guests: false,
            history_size: default_history_size(),
            history_ttl_secs: default_history_ttl(),
            presence: false,
        }
    }
}

impl ChannelSettings {
    /// `bad_request` when a bound is out of range.
    pub fn check(&self) -> Result<(), ChatError> {
        if self.history_size > MAX_HISTORY_SIZE {
            return Err(ChatError::bad_request(format!(
                "historySize must be at most {MAX_HISTORY_SIZE}"
            )));
        }
        if self.history_ttl_secs == 0 || self.history_ttl_secs > MAX_HISTORY_TTL_SECS {
            return Err(ChatError::bad_request(format!(
                "historyTtlSecs must be between 1 and {MAX_HISTORY_TTL_SECS}"
            )));
        }
        Ok(())
    }

    /// The history bounds these settings ask for.
    pub fn bounds(&self) -> HistoryBounds {
        HistoryBounds {
            size: self.history_size,
            ttl_ms: i64::try_from(self.history_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        }
    }
}

/// How much history a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryBounds {
    /// Most publications.
    pub size: u32,
    /// Oldest publication, in milliseconds of age.
    pub ttl_ms: i64,
}

impl HistoryBounds {
    /// The oldest `at` still within the age bound, at `now_ms`.
    pub fn min_at(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.ttl_ms)
    }
}

/// One publication, as subscribers receive it (`publication` event) and history lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// The channel.
    pub channel: String,
    /// Its place in the channel, consecutive within an epoch, from 1.
    pub offset: u64,
    /// The channel's history generation.
    pub epoch: String,
    /// What was published.
    pub data: String,
    /// The publishing user; `null` for the REST API (admin token or service key).
    pub from: Option<String>,
    /// When the server accepted it, unix milliseconds.
    pub at: i64,
}

/// A channel presence change (`channel_presence` event), live only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    /// The channel.
    pub channel: String,
    /// Who.
    pub uid: String,
    /// `join` or `leave`.
    pub state: String,
}

/// What travels on a channel's pub/sub channel: `P<publication JSON>` or
/// `J<presence JSON>`. One message per publication per listening node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedMessage {
    /// A new publication.
    Publication(Arc<Publication>),
    /// Someone subscribed or left (channels with presence on).
    Presence(PresenceChange),
    /// Feed messages may have been lost (the node's subscriber lagged or reconnected): the
    /// hub re-reads the histories of the channels it serves.
    Lost,
}

impl FeedMessage {
    /// Reads a feed payload; `None` when malformed.
    pub fn decode(payload: &str) -> Option<Self> {
        match payload.split_at_checked(1)? {
            ("P", json) => Some(Self::Publication(Arc::new(
                serde_json::from_str(json).ok()?,
            ))),
            ("J", json) => Some(Self::Presence(serde_json::from_str(json).ok()?)),
            _ => None,
        }
    }

    /// The payload of a presence change (publications are encoded by the store's script).
    pub fn encode_presence(change: &PresenceChange) -> String {
        format!("J{}", serde_json::json!(change))
    }
}

/// A publication the store is asked to append.
#[derive(Debug, Clone)]
pub struct NewPublication {
    /// The channel.
    pub channel: ChannelName,
    /// What to publish.
    pub data: String,
    /// The publishing user (`None`: the REST API).
    pub from: Option<String>,
    /// `(publisher, MsgID)` as one key: a re-send within the window returns the first offset.
    pub dedupe: Option<String>,
    /// How long the key is remembered, seconds.
    pub dedupe_window_secs: u64,
    /// The channel's history bounds.
    pub bounds: HistoryBounds,
    /// Accepted at, unix ms.
    pub at: i64,
}

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its offset (the first one for a re-sent MsgID).
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: String,
    /// Whether this was a re-send (nothing published).
    pub duplicate: bool,
}

/// A read of a channel's recent history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    /// The channel's epoch (made on first use).
    pub epoch: String,
    /// The newest offset (0 before any publication).
    pub latest: u64,
    /// Oldest first: those after the requested offset, or the newest `size`.
    pub publications: Vec<Publication>,
}

/// Where channel settings, histories and presence are kept.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// The settings of a created channel (`None`: never created, or deleted).
    async fn settings(&self, name: &ChannelName) -> Result<Option<ChannelSettings>, StoreError>;
    /// Creates or changes a channel.
    async fn put_settings(
        &self,
        name: &ChannelName,
        settings: &ChannelSettings,
    ) -> Result<(), StoreError>;
    /// Deletes a channel's settings, history and epoch; whether it existed.
    async fn delete(&self, name: &ChannelName) -> Result<bool, StoreError>;
    /// Every created channel.
    async fn list(&self) -> Result<Vec<(String, ChannelSettings)>, StoreError>;
    /// Appends a publication and hands it to the feed, atomically and in offset order: the
    /// offset, the history entry, the idempotency key and the feed message are one step.
    async fn publish(&self, publication: NewPublication) -> Result<Published, StoreError>;
    /// The publications after `after` (all that the history holds, oldest first), or with
    /// `None` the newest `bounds.size`; expired ones left out.
    async fn recent(
        &self,
        name: &ChannelName,
        bounds: HistoryBounds,
        after: Option<u64>,
    ) -> Result<Recent, StoreError>;
    /// Up to `limit` publications before offset `before` (all with `None`), newest first.
    async fn page(
        &self,
        name: &ChannelName,
        bounds: HistoryBounds,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Publication>, StoreError>;
    /// Hands a presence change to every node listening on the channel.
    async fn announce(&self, change: &PresenceChange) -> Result<(), StoreError>;
    /// Records (`present`) or forgets one subscription of `uid` on `channel`, made by socket
    /// `socket` of this node.
    async fn set_present(
        &self,
        channel: &ChannelName,
        uid: &str,
        socket: &str,
        present: bool,
    ) -> Result<(), StoreError>;
    /// Who is subscribed to `channel` now (distinct uids, sorted).
    async fn present(&self, channel: &ChannelName) -> Result<Vec<String>, StoreError>;
    /// How many subscriptions `channel` has now, over every node.
    async fn subscribers(&self, channel: &ChannelName) -> Result<u64, StoreError>;
}

/// Starts and stops a node's listening to channels' feeds.
#[async_trait]
pub trait ChannelFeed: Send + Sync {
    /// Listens to `channel`'s feed; returns once nothing published from now on can be missed.
    async fn listen(&self, channel: &ChannelName) -> Result<(), StoreError>;
    /// Stops listening.
    async fn stop(&self, channel: &ChannelName) -> Result<(), StoreError>;
}

/// Who publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publisher {
    /// A signed-in user's socket.
    User(UserId),
    /// A guest's socket (never allowed to publish).
    Guest(UserId),
    /// The admin token, over REST.
    Admin,
    /// A service key (its name), over REST.
    Service(String),
}

impl Publisher {
    /// The idempotency namespace of this publisher: a uid, or a name with `:` (which no uid
    /// has) for the REST publishers.
    fn dedupe_scope(&self) -> String {
        match self {
            Self::User(uid) | Self::Guest(uid) => uid.as_str().to_owned(),
            Self::Admin => ":admin".to_owned(),
            Self::Service(name) => format!(":svc:{name}"),
        }
    }

    /// The `from` of its publications.
    fn from(&self) -> Option<String> {
        match self {
            Self::User(uid) | Self::Guest(uid) => Some(uid.as_str().to_owned()),
            Self::Admin | Self::Service(_) => None,
        }
    }
}

/// Who reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A signed-in user.
    User,
    /// A guest.
    Guest,
}

/// `since` of a subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The last offset the client has.
    pub offset: u64,
    /// The epoch it had.
    pub epoch: String,
}

/// The answer to a subscribe (before the gateway sends it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The channel's settings.
    pub settings: ChannelSettings,
    /// The channel's epoch.
    pub epoch: String,
    /// Its newest offset.
    pub latest: u64,
    /// Whether `publications` are exactly those after `since`.
    pub recovered: bool,
    /// Oldest first.
    pub publications: Vec<Publication>,
}

/// The service keys of `WEBCHAT_SERVICE_KEYS`: back-ends allowed to publish over REST, and
/// nothing else.
#[derive(Clone, Default)]
pub struct ServiceKeys(Vec<(String, String)>);

impl ServiceKeys {
    /// Parses `name:secret,name:secret`; an empty name or secret, or a repeated name, is an
    /// error (start-up refuses it rather than run with a key that does not work).
    pub fn parse(raw: Option<&str>) -> Result<Self, String> {
        let mut keys: Vec<(String, String)> = Vec::new();
        for pair in raw
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let Some((name, secret)) = pair.split_once(':') else {
                return Err("WEBCHAT_SERVICE_KEYS takes name:secret pairs".into());
            };
            let (name, secret) = (name.trim(), secret.trim());
            if name.is_empty() || secret.is_empty() {
                return Err("a service key needs a name and a secret".into());
            }
            if keys.iter().any(|(n, _)| n == name) {
                return Err(format!("service key {name} is named twice"));
            }
            keys.push((name.to_owned(), secret.to_owned()));
        }
        Ok(Self(keys))
    }

    /// The name of the key whose secret is `presented` (compared in constant time).
    pub fn name_of(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for (name, secret) in &self.0 {
            if constant_time_eq(presented.as_bytes(), secret.as_bytes()) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The rules of channels over a [`ChannelStore`].
#[derive(Clone)]
pub struct ChannelService {
    store: Arc<dyn ChannelStore>,
    /// Whether `general` exists without being created.
    general: bool,
    max_data_bytes: usize,
    dedupe_window_secs: u64,
    service_keys: ServiceKeys,
}

impl ChannelService {
    /// A service over `store`. `general`: the channel `general` exists by default.
    pub fn new(
        store: Arc<dyn ChannelStore>,
        general: bool,
        max_data_bytes: usize,
        dedupe_window_secs: u64,
    ) -> Self {
        Self {
            store,
            general,
            max_data_bytes,
            dedupe_window_secs,
            service_keys: ServiceKeys::default(),
        }
    }

    /// The same service, accepting `keys` for REST publishes.
    pub fn with_service_keys(mut self, keys: ServiceKeys) -> Self {
        self.service_keys = keys;
        self
    }

    /// The service key whose secret is `presented`.
    pub fn service_key(&self, presented: &str) -> Option<String> {
        self.service_keys.name_of(presented).map(str::to_owned)
    }

    /// The store (presence and the gateway's hub use it).
    pub fn store(&self) -> &Arc<dyn ChannelStore> {
        &self.store
    }

    /// A channel's settings; `not_found` when it does not exist.
    pub async fn settings(&self, name: &ChannelName) -> Result<ChannelSettings, ChatError> {
        match self.store.settings(name).await? {
            Some(settings) => Ok(settings),
            None if self.is_default(name) => Ok(ChannelSettings::default()),
            None => Err(not_found(name)),
        }
    }

    fn is_default(&self, name: &ChannelName) -> bool {
        self.general && name.as_str() == GENERAL
    }

    /// The settings `reader` may read: `forbidden` for a guest on a channel without guests.
    pub async fn readable(
        &self,
        name: &ChannelName,
        reader: Reader,
    ) -> Result<ChannelSettings, ChatError> {
        let settings = self.settings(name).await?;
        if reader == Reader::Guest && !settings.guests {
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                "guests may only read guest channels",
            ));
        }
        Ok(settings)
    }

    /// Every channel, `general` first when it exists.
    pub async fn list(&self) -> Result<Vec<(String, ChannelSettings)>, ChatError> {
        let mut channels = self.store.list().await?;
        channels.sort_by(|a, b| a.0.cmp(&b.0));
        if self.general && !channels.iter().any(|(n, _)| n == GENERAL) {
            channels.push((GENERAL.to_owned(), ChannelSettings::default()));
        }
        if let Some(at) = channels.iter().position(|(n, _)| n == GENERAL) {
            let general = channels.remove(at);
            channels.insert(0, general);
        }
        Ok(channels)
    }

    /// Creates or changes a channel (admin).
    #[tracing::instrument(skip_all, fields(channel = %name))]
    pub async fn put(
        &self,
        name: &ChannelName,
        settings: &ChannelSettings,
    ) -> Result<(), ChatError> {
        settings.check()?;
        self.store.put_settings(name, settings).await?;
        tracing::info!(?settings, "channel settings saved");
        Ok(())
    }

    /// Deletes a channel and its history (admin). `general` is switched off by configuration
    /// instead (`forbidden` here), since it would come back at once.
    #[tracing::instrument(skip_all, fields(channel = %name))]
    pub async fn delete(&self, name: &ChannelName) -> Result<(), ChatError> {
        if self.is_default(name) {
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                "general is switched off with WEBCHAT_GENERAL_CHANNEL=false",
            ));
        }
        if !self.store.delete(name).await? {
            return Err(not_found(name));
        }
        tracing::info!("channel deleted");
        Ok(())
    }

    /// Publishes `data` on `name` for `publisher`: checks the channel, the policy and the
    /// size, then appends (once per `(publisher, msg_id)` within the window).
    #[tracing::instrument(skip_all, fields(channel = %name))]
    pub async fn publish(
        &self,
        publisher: &Publisher,
        name: &ChannelName,
        data: String,
        msg_id: Option<MsgId>,
    ) -> Result<Published, ChatError> {
        let settings = self.settings(name).await?;
        match (publisher, settings.publish) {
            (Publisher::Guest(_), _) => {
                return Err(ChatError::new(
                    ErrorCode::Forbidden,
                    "guests cannot publish",
                ))
            }
            (Publisher::User(_), PublishPolicy::Server) => {
                return Err(ChatError::new(
                    ErrorCode::Forbidden,
                    "only the server publishes on this channel",
                ))
            }
            _ => {}
        }
        if data.len() > self.max_data_bytes {
            return Err(ChatError::new(
                ErrorCode::TooLarge,
                format!(
                    "data is {} bytes; the limit is {}",
                    data.len(),
                    self.max_data_bytes
                ),
            ));
        }
        let published = self
            .store
            .publish(NewPublication {
                channel: name.clone(),
                data,
                from: publisher.from(),
                dedupe: msg_id.map(|m| format!("{}\n{}", publisher.dedupe_scope(), m.as_str())),
                dedupe_window_secs: self.dedupe_window_secs,
                bounds: settings.bounds(),
                at: now_millis(),
            })
            .await?;
        tracing::debug!(
            offset = published.offset,
            duplicate = published.duplicate,
            "published"
        );
        Ok(published)
    }

    /// What a subscriber gets in its subscribe ack (§9): with `since` in the current epoch
    /// and every later publication still held, exactly those (`recovered`); otherwise the
    /// newest `historySize`.
    pub async fn recover(
        &self,
        name: &ChannelName,
        settings: ChannelSettings,
        since: Option<&Since>,
    ) -> Result<Subscribed, ChatError> {
        let bounds = settings.bounds();
        if let Some(since) = since {
            let recent = self.store.recent(name, bounds, Some(since.offset)).await?;
            let complete = recent.epoch == since.epoch
                && since.offset <= recent.latest
                && holds_all_after(&recent.publications, since.offset, recent.latest);
            if complete {
                return Ok(Subscribed {
                    settings,
                    epoch: recent.epoch,
                    latest: recent.latest,
                    recovered: true,
                    publications: recent.publications,
                });
            }
        }
        let recent = self.store.recent(name, bounds, None).await?;
        Ok(Subscribed {
            settings,
            epoch: recent.epoch,
            latest: recent.latest,
            recovered: false,
            publications: recent.publications,
        })
    }

    /// History for REST, newest first; `next` is the cursor of the following page.
    pub async fn page(
        &self,
        name: &ChannelName,
        reader: Reader,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Publication>, Option<u64>), ChatError> {
        let settings = self.readable(name, reader).await?;
        let mut items = self
            .store
            .page(name, settings.bounds(), before, limit.saturating_add(1))
            .await?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|p| p.offset)
        } else {
            None
        };
        Ok((items, next))
    }

    /// Who is subscribed to `name` now: `forbidden` unless the channel has presence on.
    pub async fn present(
        &self,
        name: &ChannelName,
        reader: Reader,
    ) -> Result<Vec<String>, ChatError> {
        let settings = self.readable(name, reader).await?;
        if !settings.presence {
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                "this channel does not share presence",
            ));
        }
        Ok(self.store.present(name).await?)
    }
}

/// Whether `publications` (oldest first, all after `after`) are every one up to `latest`.
fn holds_all_after(publications: &[Publication], after: u64, latest: u64) -> bool {
    let expected = latest.saturating_sub(after);
    u64::try_from(publications.len()).is_ok_and(|n| n == expected)
        && publications
            .iter()
            .zip(after + 1..)
            .all(|(p, offset)| p.offset == offset)
}

fn not_found(name: &ChannelName) -> ChatError {
    ChatError::new(ErrorCode::NotFound, format!("no channel {name}"))
}

/// A fresh epoch: 16 hex digits, random, so a history rebuilt from nothing never reuses one.
pub fn fresh_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(offset: u64) -> Publication {
        Publication {
            channel: "c".into(),
            offset,
            epoch: "e".into(),
            data: String::new(),
            from: None,
            at: 0,
        }
    }

    #[test]
    fn recovery_needs_every_publication_after_the_offset() {
        let all: Vec<_> = (4..=6).map(publication).collect();
        assert!(holds_all_after(&all, 3, 6));
        assert!(!holds_all_after(&all[1..], 3, 6), "offset 4 is gone");
        assert!(!holds_all_after(&all, 3, 7), "the newest is missing");
        assert!(holds_all_after(&[], 6, 6), "nothing missed");
    }

    #[test]
    fn settings_default_and_bounds_are_checked() {
        let parsed: ChannelSettings = serde_json::from_str("{}").expect("defaults");
        assert_eq!(parsed, ChannelSettings::default());
        assert_eq!(parsed.history_size, 100);
        let server: ChannelSettings =
            serde_json::from_str(r#"{"publish":"server","guests":true,"historySize":5}"#)
                .expect("settings");
        assert_eq!(server.publish, PublishPolicy::Server);
        assert!(server.check().is_ok());
        assert!(serde_json::from_str::<ChannelSettings>(r#"{"publish":"anyone"}"#).is_err());
        assert!(serde_json::from_str::<ChannelSettings>(r#"{"colour":1}"#).is_err());
        let too_big = ChannelSettings {
            history_size: MAX_HISTORY_SIZE + 1,
            ..ChannelSettings::default()
        };
        assert_eq!(
            too_big.check().map_err(|e| e.code),
            Err(ErrorCode::BadRequest)
        );
        let no_age = ChannelSettings {
            history_ttl_secs: 0,
            ..ChannelSettings::default()
        };
        assert!(no_age.check().is_err());
    }

    #[test]
    fn service_keys_parse_and_match_whole_secrets_only() {
        let keys = ServiceKeys::parse(Some("shop:s3cret, feed:other")).expect("keys");
        assert_eq!(keys.name_of("s3cret"), Some("shop"));
        assert_eq!(keys.name_of("other"), Some("feed"));
        assert_eq!(keys.name_of("s3cre"), None);
        assert_eq!(keys.name_of(""), None);
        assert!(ServiceKeys::parse(None)
            .expect("none")
            .name_of("x")
            .is_none());
        for bad in ["shop", "shop:", ":x", "a:1,a:2"] {
            assert!(ServiceKeys::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn feed_messages_round_trip() {
        let json = serde_json::to_string(&publication(7)).expect("json");
        match FeedMessage::decode(&format!("P{json}")) {
            Some(FeedMessage::Publication(p)) => assert_eq!(p.offset, 7),
            other => panic!("unexpected {other:?}"),
        }
        let change = PresenceChange {
            channel: "c".into(),
            uid: "u".into(),
            state: "join".into(),
        };
        assert_eq!(
            FeedMessage::decode(&FeedMessage::encode_presence(&change)),
            Some(FeedMessage::Presence(change))
        );
        for junk in ["", "P", "Pnot json", "X{}"] {
            assert!(FeedMessage::decode(junk).is_none(), "{junk:?}");
        }
    }
}
