//! The channel hub: which local sockets subscribe to which channel, and the hand-off of each
//! channel's feed to them.
//!
//! A node listens to a channel's feed only while it has a subscriber to it, and receives each
//! publication once, whatever its number of subscribers. The live subscribers of a channel
//! are the members of one socket.io room, so a publication is encoded once and that one
//! frame is queued on every subscriber's socket (socketioxide's local broadcast).
//!
//! No gap, no overlap (§9): a subscribe first joins the feed as *pending* (publications are
//! buffered for it), then reads the history, sends its ack, and then, under the channel's
//! lock, sends what was buffered after the ack's newest offset. The read may see
//! publications whose feed messages have not arrived yet, so the socket joins the room only
//! once the feed has passed the ack's newest offset; until then it gets later publications
//! one by one and those up to that offset not at all. The feed is handled by one task in
//! arrival order, which is offset order, so from then on the room gets every later
//! publication once, in order.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use socketioxide::{extract::SocketRef, SocketIo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    channels::{ChannelFeed, ChannelName, ChannelStore, FeedMessage, HistoryBounds, Publication},
    storage::StoreError,
};

/// How often a node re-marks its subscriptions as present (well within the store's
/// staleness bound, 90 s on Redis).
const PRESENCE_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Most channels one socket may subscribe to at once.
pub const MAX_SUBSCRIPTIONS_PER_SOCKET: usize = 64;

/// Where a local subscriber is in its subscribe.
enum Stage {
    /// Reading the history: publications are buffered.
    Pending(Vec<Arc<Publication>>),
    /// Acked up to `floor` in `epoch`, but the feed has not reached it yet (the read can see
    /// a publication before its feed message arrives): later publications go to the socket
    /// one by one, those up to `floor` not at all, until the feed passes `floor`.
    CatchingUp { epoch: String, floor: u64 },
    /// In the room: gets every publication the feed brings.
    Live,
}

/// One local subscriber.
struct Member {
    socket: SocketRef,
    uid: String,
    stage: Stage,
}

/// One channel with local subscribers.
#[derive(Default)]
struct Entry {
    listening: bool,
    members: HashMap<String, Member>,
    /// Epoch and offset of the newest publication handed to the room.
    last: Option<(String, u64)>,
    /// The history bounds the last subscribe read with (for re-reads after a lost feed).
    bounds: Option<HistoryBounds>,
}

/// See the module documentation.
pub struct ChannelHub {
    io: OnceLock<SocketIo>,
    feed: Arc<dyn ChannelFeed>,
    store: Arc<dyn ChannelStore>,
    entries: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Entry>>>>,
}

/// The socket.io room of a channel's live local subscribers.
fn room(channel: &str) -> String {
    format!("ch:{channel}")
}

impl ChannelHub {
    /// A hub that listens with `feed` and re-reads lost publications from `store`.
    pub fn new(feed: Arc<dyn ChannelFeed>, store: Arc<dyn ChannelStore>) -> Arc<Self> {
        Arc::new(Self {
            io: OnceLock::new(),
            feed,
            store,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// Gives the hub the socket.io handle it broadcasts with (built after the state).
    pub fn set_io(&self, io: SocketIo) {
        let _ = self.io.set(io);
    }

    fn entry(&self, channel: &str) -> Arc<tokio::sync::Mutex<Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(channel.to_owned())
            .or_default()
            .clone()
    }

    fn existing(&self, channel: &str) -> Option<Arc<tokio::sync::Mutex<Entry>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(channel)
            .cloned()
    }

    /// Step one of a subscribe: listens to the channel's feed (returns once active) and
    /// buffers its publications for `socket`. A socket already subscribed starts over.
    pub async fn begin(
        &self,
        socket: &SocketRef,
        uid: &str,
        channel: &ChannelName,
        bounds: HistoryBounds,
    ) -> Result<(), StoreError> {
        let entry = self.entry(channel.as_str());
        let mut entry = entry.lock().await;
        if !entry.listening {
            self.feed.listen(channel).await?;
            entry.listening = true;
        }
        socket.leave(room(channel.as_str()));
        entry.bounds = Some(bounds);
        entry.members.insert(
            socket.id.to_string(),
            Member {
                socket: socket.clone(),
                uid: uid.to_owned(),
                stage: Stage::Pending(Vec::new()),
            },
        );
        // socketioxide marks a socket disconnected before its disconnect handler runs, and
        // that handler takes this lock to find the socket's channels: either it finds this
        // member, or this sees the socket gone. Nothing outlives the socket.
        if !socket.connected() {
            entry.members.remove(socket.id.as_str());
            if entry.members.is_empty() && self.feed.stop(channel).await.is_ok() {
                entry.listening = false;
            }
            return Err(StoreError::Unavailable("the socket closed".into()));
        }
        Ok(())
    }

    /// Step two: `ack` sends the subscribe answer (whose newest offset is `latest` in
    /// `epoch`); then the buffered publications after it go out and the socket joins the
    /// room, all under the channel's lock. `false` (and no ack) when the socket left
    /// meanwhile.
    pub async fn complete(
        &self,
        socket: &SocketRef,
        channel: &ChannelName,
        epoch: &str,
        latest: u64,
        ack: impl FnOnce(),
    ) -> bool {
        let Some(entry) = self.existing(channel.as_str()) else {
            return false;
        };
        let mut entry = entry.lock().await;
        let fed_past = entry
            .last
            .as_ref()
            .is_some_and(|(e, offset)| e == epoch && *offset >= latest);
        let Some(member) = entry.members.get_mut(socket.id.as_str()) else {
            return false;
        };
        let buffered = match std::mem::replace(&mut member.stage, Stage::Live) {
            Stage::Pending(buffered) => buffered,
            _ => Vec::new(),
        };
        ack();
        let mut past = fed_past;
        for publication in buffered {
            // A publication of another epoch means the history was lost since the read: the
            // client is told by the new epoch itself.
            if publication.epoch != epoch || publication.offset > latest {
                let _ = socket.emit("publication", &*publication);
                past = true;
            }
        }
        if past {
            socket.join(room(channel.as_str()));
        } else {
            member.stage = Stage::CatchingUp {
                epoch: epoch.to_owned(),
                floor: latest,
            };
        }
        true
    }

    /// Removes `socket` from `channel`; stops listening when it was the last local
    /// subscriber. The uid it subscribed as, if it did.
    pub async fn leave(&self, socket: &SocketRef, channel: &ChannelName) -> Option<String> {
        let entry = self.existing(channel.as_str())?;
        let mut entry = entry.lock().await;
        let member = entry.members.remove(socket.id.as_str())?;
        socket.leave(room(channel.as_str()));
        if entry.members.is_empty() && entry.listening {
            match self.feed.stop(channel).await {
                Ok(()) => entry.listening = false,
                // Still listening: harmless (nobody to give it to), retried on the next change.
                Err(e) => tracing::warn!(channel = %channel, error = %e, "stop listening failed"),
            }
        }
        Some(member.uid)
    }

    /// Whether `socket` subscribes to `channel` (live or still reading its history).
    pub async fn is_member(&self, socket: &SocketRef, channel: &str) -> bool {
        match self.existing(channel) {
            Some(entry) => entry.lock().await.members.contains_key(socket.id.as_str()),
            None => false,
        }
    }

    /// Every channel `socket` subscribes to.
    pub async fn channels_of(&self, socket: &SocketRef) -> Vec<String> {
        let all: Vec<(String, Arc<tokio::sync::Mutex<Entry>>)> = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect();
        let mut mine = Vec::new();
        for (name, entry) in all {
            if entry.lock().await.members.contains_key(socket.id.as_str()) {
                mine.push(name);
            }
        }
        mine
    }

    /// How many local sockets subscribe to `channel`.
    pub async fn local_subscribers(&self, channel: &str) -> usize {
        match self.existing(channel) {
            Some(entry) => entry.lock().await.members.len(),
            None => 0,
        }
    }

    /// Hands the feed to local subscribers, in arrival order, until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut feed: mpsc::UnboundedReceiver<FeedMessage>,
        shutdown: CancellationToken,
    ) {
        let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = refresh.tick() => {
                    self.refresh_presence().await;
                    continue;
                }
                m = feed.recv() => match m { Some(m) => m, None => return },
            };
            match message {
                FeedMessage::Publication(publication) => self.deliver(publication).await,
                FeedMessage::Presence(change) => self.tell_presence(&change).await,
                FeedMessage::Lost => self.reread_all().await,
            }
        }
    }

    /// Marks this node's subscriptions as still there (the store forgets those of a node
    /// that stops refreshing them: a crashed node's subscribers leave the counts).
    async fn refresh_presence(&self) {
        let all: Vec<(String, Arc<tokio::sync::Mutex<Entry>>)> = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect();
        for (name, entry) in all {
            let Ok(channel) = ChannelName::parse(&name) else {
                continue;
            };
            let members: Vec<(String, String)> = entry
                .lock()
                .await
                .members
                .iter()
                .map(|(socket, m)| (socket.clone(), m.uid.clone()))
                .collect();
            for (socket, uid) in members {
                if let Err(e) = self.store.set_present(&channel, &uid, &socket, true).await {
                    tracing::warn!(channel = %name, error = %e, "refreshing channel presence failed");
                    break;
                }
            }
        }
    }

    /// Sends a presence change to the channel's subscribers that are past their subscribe
    /// ack (live ones through the room).
    async fn tell_presence(&self, change: &crate::channels::PresenceChange) {
        let (Some(io), Some(entry)) = (self.io.get(), self.existing(&change.channel)) else {
            return;
        };
        let entry = entry.lock().await;
        for member in entry.members.values() {
            if matches!(member.stage, Stage::CatchingUp { .. }) {
                let _ = member.socket.emit("channel_presence", change);
            }
        }
        let _ = io
            .to(room(&change.channel))
            .emit("channel_presence", change)
            .await;
    }

    async fn deliver(&self, publication: Arc<Publication>) {
        let Some(entry) = self.existing(&publication.channel) else {
            return;
        };
        let mut entry = entry.lock().await;
        self.hand_out(&mut entry, publication).await;
    }

    async fn hand_out(&self, entry: &mut Entry, publication: Arc<Publication>) {
        if let Some((epoch, offset)) = &entry.last {
            if *epoch == publication.epoch && publication.offset <= *offset {
                return; // already handed out (a re-read after a lost feed overlaps)
            }
        }
        let mut caught_up = Vec::new();
        for member in entry.members.values_mut() {
            match &mut member.stage {
                Stage::Pending(buffered) => buffered.push(publication.clone()),
                Stage::CatchingUp { epoch, floor } => {
                    if *epoch != publication.epoch || publication.offset > *floor {
                        caught_up.push(member.socket.clone());
                        member.stage = Stage::Live;
                    }
                }
                Stage::Live => {}
            }
        }
        if let Some(io) = self.io.get() {
            if let Err(e) = io
                .to(room(&publication.channel))
                .emit("publication", &*publication)
                .await
            {
                tracing::debug!(channel = %publication.channel, error = %e, "publication not sent to every socket");
            }
        }
        // After the room's copy (they were not in the room for it): from now on, the room's.
        for socket in caught_up {
            let _ = socket.emit("publication", &*publication);
            socket.join(room(&publication.channel));
        }
        entry.last = Some((publication.epoch.clone(), publication.offset));
    }

    /// After lost feed messages: sends each channel's publications after the newest handed
    /// out, from its history.
    async fn reread_all(&self) {
        let all: Vec<(String, Arc<tokio::sync::Mutex<Entry>>)> = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, entry)| (name.clone(), entry.clone()))
            .collect();
        for (name, entry) in all {
            let mut entry = entry.lock().await;
            let (Some(bounds), false) = (entry.bounds, entry.members.is_empty()) else {
                continue;
            };
            let Ok(channel) = ChannelName::parse(&name) else {
                continue;
            };
            let after = entry.last.as_ref().map(|(_, offset)| *offset);
            match self.store.recent(&channel, bounds, after).await {
                Ok(recent) => {
                    for publication in recent.publications {
                        self.hand_out(&mut entry, Arc::new(publication)).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(channel = %name, error = %e, "re-reading a channel after a lost feed failed")
                }
            }
        }
    }
}
