//! Presence: who is online (any socket on any node) and who is told when that changes.
//!
//! Owns the [`PresenceStore`] (per-user socket counts per node, with node heartbeats so a
//! node that dies without cleaning up leaves its users online for at most the timeout) and
//! the [`ContactStore`] (the audience: 1:1 peers and the groups a user is in). `presence`
//! events are live-only: they go to the audience's channels and are never stored.

mod embedded;
mod redis;

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use dashmap::DashSet;
use futures_util::{future::join_all, StreamExt};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

pub use self::embedded::{EmbeddedContactStore, MemoryPresenceStore};
pub use self::redis::{RedisContactStore, RedisPresenceStore};
use crate::{
    blocks::BlockStore,
    bus::{Bus, Router},
    domain::{GroupId, UserId, WireEvent},
    groups::GroupStore,
    storage::StoreError,
};

/// Online state across nodes.
#[async_trait]
pub trait PresenceStore: Send + Sync {
    /// A socket of `uid` connected on this node; true when the user was offline everywhere.
    async fn socket_up(&self, uid: &UserId) -> Result<bool, StoreError>;
    /// A socket of `uid` left this node; true when the user is now offline everywhere.
    async fn socket_down(&self, uid: &UserId) -> Result<bool, StoreError>;
    /// Proves this node alive (re-registering `local`, its users and socket counts, if other
    /// nodes had given it up for dead) and clears the users of nodes that stopped heartbeating.
    async fn heartbeat(&self, local: &[(String, u32)]) -> Result<Heartbeat, StoreError>;
    /// Whether each of `uids` is online now (on any node).
    async fn online(&self, uids: &[String]) -> Result<Vec<bool>, StoreError>;
}

/// Told of every presence change this node announces, after the offline grace (so a
/// reload that comes back within it is no change): webhooks' `presence` event.
pub trait PresenceObserver: Send + Sync {
    /// `uid` came online (true) or went offline (false) everywhere.
    fn changed(&self, uid: &UserId, online: bool);
}

/// What a heartbeat changed.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// Users now offline everywhere (their node was dead).
    pub offline: Vec<String>,
    /// Users online again (this node had been given up for dead, and is back).
    pub online: Vec<String>,
}

/// Who shares a conversation or a group with whom.
#[async_trait]
pub trait ContactStore: Send + Sync {
    /// Notes that `sender` sent `recipient` a 1:1 message (one direction only).
    async fn note_sent(&self, sender: &UserId, recipient: &UserId) -> Result<(), StoreError>;
    /// The users `uid` has exchanged 1:1 messages with in both directions (mutual contacts).
    async fn peers(&self, uid: &UserId) -> Result<Vec<String>, StoreError>;
    /// Notes that `members` are in `gid`.
    async fn joined(&self, gid: &GroupId, members: &[UserId]) -> Result<(), StoreError>;
    /// Notes that `member` left `gid`.
    async fn left(&self, gid: &GroupId, member: &UserId) -> Result<(), StoreError>;
    /// The groups `uid` is in.
    async fn groups_of(&self, uid: &UserId) -> Result<Vec<String>, StoreError>;
}

/// (sender, recipient) pairs already noted by this node: noting is idempotent, so repeating
/// it for every message would only cost two writes per message. Bounded; cleared when full.
const LINK_CACHE_MAX: usize = 1_000_000;

/// Presence transitions and the events they cause.
#[derive(Clone)]
pub struct PresenceService {
    store: Arc<dyn PresenceStore>,
    contacts: Arc<dyn ContactStore>,
    linked: Arc<DashSet<(String, String)>>,
    /// Announcements, sent in order by one task so a quick online/offline pair can never
    /// reach the audience swapped; a socket's connect never waits for its audience.
    announcements: mpsc::UnboundedSender<Announcement>,
    /// A handle on the announcer's audience lookups (profile sharing uses them too).
    announcer: Announcer,
}

/// Users a stopping node announces offline at once.
const FLUSH_CONCURRENCY: usize = 64;

/// What the announcer is asked to do, in order.
enum Announcement {
    /// The user came online (true) or went offline (false) everywhere.
    Change(UserId, bool),
    /// Send every held "offline" now (the node is stopping), then answer.
    Flush(oneshot::Sender<()>),
}

/// Sends presence events, one announcement after another, each to its whole audience at once.
/// An "offline" waits `offline_grace` first and goes out only if the user is still offline
/// then (see [`Announcer::run`]).
#[derive(Clone)]
struct Announcer {
    store: Arc<dyn PresenceStore>,
    offline_grace: Duration,
    contacts: Arc<dyn ContactStore>,
    groups: Arc<dyn GroupStore>,
    bus: Arc<dyn Bus>,
    /// Who blocks whom: a blocker's presence never reaches the users it blocks.
    blocks: Arc<dyn BlockStore>,
    /// Groups larger than this do not share presence among their members.
    group_limit: usize,
    /// Told of each announced change, once set.
    observer: Arc<std::sync::OnceLock<Arc<dyn PresenceObserver>>>,
}

impl PresenceService {
    /// A service over the node's back-ends. A user's audience hears "offline" only after the
    /// user stayed offline for `offline_grace` (zero: at once).
    pub fn new(
        store: Arc<dyn PresenceStore>,
        contacts: Arc<dyn ContactStore>,
        groups: Arc<dyn GroupStore>,
        bus: Arc<dyn Bus>,
        blocks: Arc<dyn BlockStore>,
        group_limit: usize,
        offline_grace: Duration,
    ) -> Self {
        let (announcements, queue) = mpsc::unbounded_channel();
        let announcer = Announcer {
            store: store.clone(),
            offline_grace,
            contacts: contacts.clone(),
            groups,
            bus,
            blocks,
            group_limit,
            observer: Arc::default(),
        };
        tokio::spawn(announcer.clone().run(queue));
        Self {
            store,
            contacts,
            linked: Arc::new(DashSet::new()),
            announcements,
            announcer,
        }
    }

    /// Tells `observer` of every change this node announces from now on (set once; a
    /// second observer is ignored).
    pub fn observe(&self, observer: Arc<dyn PresenceObserver>) {
        let _ = self.announcer.observer.set(observer);
    }

    /// The contact index, for the chat service to keep up to date.
    pub fn contacts(&self) -> &Arc<dyn ContactStore> {
        &self.contacts
    }

    /// Notes that `sender` sent `recipient` a 1:1 message, once per direction and node run.
    /// Two users share presence once each has sent the other one.
    pub async fn note_sent(&self, sender: &UserId, recipient: &UserId) -> Result<(), StoreError> {
        let pair = (sender.to_string(), recipient.to_string());
        if self.linked.contains(&pair) {
            return Ok(());
        }
        self.contacts.note_sent(sender, recipient).await?;
        if self.linked.len() >= LINK_CACHE_MAX {
            self.linked.clear();
        }
        self.linked.insert(pair);
        Ok(())
    }

    /// A socket connected: tells the audience when the user came online.
    pub async fn socket_up(&self, uid: &UserId) {
        match self.store.socket_up(uid).await {
            Ok(true) => self.announce(uid, true).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(uid = %uid, error = %e, "presence not recorded"),
        }
    }

    /// A socket left: tells the audience when the user went offline.
    pub async fn socket_down(&self, uid: &UserId) {
        match self.store.socket_down(uid).await {
            Ok(true) => self.announce(uid, false).await,
            Ok(false) => {}
            Err(e) => tracing::warn!(uid = %uid, error = %e, "presence not recorded"),
        }
    }

    /// Heartbeats with `store` every `every` until `shutdown`, announcing the changes. A node
    /// too busy to heartbeat within the timeout is taken for dead by the others; when it beats
    /// again it re-registers its users (see [`PresenceStore::heartbeat`]).
    pub async fn run_heartbeats(
        self,
        store: Arc<dyn PresenceStore>,
        router: Arc<Router>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut ticks = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            match store.heartbeat(&router.local_socket_counts()).await {
                Ok(beat) => {
                    for (uids, online) in [(beat.offline, false), (beat.online, true)] {
                        for uid in uids {
                            if let Ok(uid) = UserId::parse(&uid) {
                                self.announce(&uid, online).await;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "presence heartbeat failed"),
            }
        }
    }

    async fn announce(&self, uid: &UserId, online: bool) {
        let _ = self
            .announcements
            .send(Announcement::Change(uid.clone(), online));
    }

    /// Sends every "offline" still held back for its grace once that grace is over, and
    /// returns when they are out: called when the node stops, after its sockets are gone.
    /// Their counts are already cleared from the store, so no other node would ever
    /// announce these users offline.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.announcements.send(Announcement::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }

    /// Which of `uids` are online, for `viewer`: only users whose presence events the viewer
    /// would be sent (its contacts, and not blocking the viewer) are answered;
    /// the others are left out, a blocker exactly like a stranger.
    pub async fn online_for(
        &self,
        viewer: &UserId,
        uids: &[String],
    ) -> Result<Vec<(String, bool)>, StoreError> {
        // The viewer's contacts are exactly the users whose audience holds the viewer, unless
        // they block the viewer (the viewer's own blocks hide nobody from the viewer).
        let audience = self.announcer.contacts_of(viewer).await?;
        let candidates: Vec<UserId> = uids
            .iter()
            .filter(|u| audience.contains(u.as_str()))
            .filter_map(|u| UserId::parse(u).ok())
            .collect();
        // One read per candidate, each in the candidate's own slot, all side by side.
        let blocking = join_all(
            candidates
                .iter()
                .map(|u| self.announcer.blocks.blocks(u, viewer)),
        )
        .await;
        let mut visible = Vec::with_capacity(candidates.len());
        for (uid, blocks_viewer) in candidates.into_iter().zip(blocking) {
            if !blocks_viewer? {
                visible.push(uid.to_string());
            }
        }
        let online = self.store.online(&visible).await?;
        Ok(visible.into_iter().zip(online).collect())
    }

    /// Sends `event` (news about `uid`, such as a changed profile) to everyone told `uid`'s
    /// presence and to `uid`'s own sockets, on whichever node they are. Returns how many
    /// users it was addressed to.
    pub async fn tell_audience(&self, uid: &UserId, event: WireEvent) -> Result<usize, StoreError> {
        let mut audience = self.announcer.audience(uid).await?;
        audience.insert(uid.to_string());
        let reached = audience.len();
        self.announcer.publish_to(audience, event).await;
        Ok(reached)
    }

    /// Everyone who is told `uid`'s presence: mutual 1:1 contacts and co-members of groups
    /// (groups larger than the presence group limit excluded), minus the users `uid`
    /// blocks; `uid` itself not included.
    pub async fn audience(&self, uid: &UserId) -> Result<BTreeSet<String>, StoreError> {
        self.announcer.audience(uid).await
    }
}

impl Announcer {
    /// Sends the queued changes in order, holding each "offline" back for the grace: a tab
    /// reloaded, or closed just as another opened, takes the user offline for a moment, and
    /// the audience would see the user flicker offline and online. An "online" drops the
    /// user's held "offline" and is announced (the audience may hear "online" twice, which
    /// changes nothing for it; it may also have heard "offline" from another node). An
    /// "offline" whose grace ran out is sent only if the store still has the user offline
    /// (another node may hold a new socket). One task sends everything, so an "offline" and
    /// a later "online" from this node never reach the audience swapped.
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Announcement>) {
        // Held "offline"s in deadline order; `holding` has each held user's deadline, so a
        // queue entry whose user came back (or was held again later) is skipped when due.
        let mut held: VecDeque<(Instant, UserId)> = VecDeque::new();
        let mut holding: HashMap<UserId, Instant> = HashMap::new();
        loop {
            let due = held.front().map(|(at, _)| *at);
            let grace_over = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = queue.recv() => match received {
                    Some(Announcement::Change(uid, true)) => {
                        holding.remove(&uid);
                        self.announce(&uid, true).await;
                    }
                    Some(Announcement::Change(uid, false)) if self.offline_grace.is_zero() => {
                        self.announce(&uid, false).await;
                    }
                    Some(Announcement::Change(uid, false)) => {
                        if !holding.contains_key(&uid) {
                            let at = Instant::now() + self.offline_grace;
                            holding.insert(uid.clone(), at);
                            held.push_back((at, uid));
                        }
                    }
                    Some(Announcement::Flush(done)) => {
                        self.flush_held(std::mem::take(&mut holding)).await;
                        held.clear();
                        let _ = done.send(());
                    }
                    None => break,
                },
                () = grace_over => {
                    if let Some((at, uid)) = held.pop_front() {
                        if holding.get(&uid) == Some(&at) {
                            holding.remove(&uid);
                            self.announce_if_offline(&uid).await;
                        }
                    }
                }
            }
        }
    }

    /// Sends the held "offline"s of a stopping node. It waits out their grace first (at most
    /// one grace): its clients are reconnecting to other nodes, and a user back online by then
    /// causes no flicker. Users are announced side by side (a node may hold thousands).
    async fn flush_held(&self, holding: HashMap<UserId, Instant>) {
        if let Some(last) = holding.values().max() {
            tokio::time::sleep_until(*last).await;
        }
        futures_util::stream::iter(holding.into_keys())
            .for_each_concurrent(FLUSH_CONCURRENCY, |uid| async move {
                self.announce_if_offline(&uid).await;
            })
            .await;
    }

    /// Announces "offline" unless the store has `uid` online again; when the store cannot
    /// tell, announces it (a user shown online for good would be worse).
    async fn announce_if_offline(&self, uid: &UserId) {
        let online = self.store.online(&[uid.to_string()]).await;
        if !matches!(online.as_deref(), Ok([true])) {
            self.announce(uid, false).await;
        }
    }

    /// Sends `presence` to everyone who shares a conversation or a group with `uid`.
    async fn announce(&self, uid: &UserId, online: bool) {
        if let Some(observer) = self.observer.get() {
            observer.changed(uid, online);
        }
        let audience = match self.audience(uid).await {
            Ok(audience) => audience,
            Err(e) => {
                tracing::warn!(uid = %uid, error = %e, "presence audience unknown");
                return;
            }
        };
        let body = if online { "online" } else { "offline" };
        let event = WireEvent::new("presence", uid.as_str(), "", "", body.to_owned());
        self.publish_to(audience, event).await;
    }

    /// Sends `event` to each of `audience`, addressed to each one.
    async fn publish_to(&self, audience: BTreeSet<String>, event: WireEvent) {
        let sends = audience.into_iter().filter_map(|member| {
            let to = UserId::parse(&member).ok()?;
            let mut event = event.clone();
            event.to = member;
            Some(async move {
                if let Err(e) = self.bus.publish_live(&to, None, &event).await {
                    tracing::debug!(error = %e, "presence event not published");
                }
            })
        });
        join_all(sends).await;
    }

    /// Everyone told `uid`'s presence: [`Announcer::contacts_of`] minus the users `uid`
    /// blocks.
    async fn audience(&self, uid: &UserId) -> Result<BTreeSet<String>, StoreError> {
        let (mut audience, blocked) =
            tokio::try_join!(self.contacts_of(uid), self.blocks.blocked_by(uid))?;
        for blocked in &blocked {
            audience.remove(blocked);
        }
        Ok(audience)
    }

    /// Mutual 1:1 contacts and co-members of groups within the limit, `uid` not included.
    /// Symmetric: each one's list holds the other.
    async fn contacts_of(&self, uid: &UserId) -> Result<BTreeSet<String>, StoreError> {
        let mut audience: BTreeSet<String> = self.contacts.peers(uid).await?.into_iter().collect();
        for gid in self.contacts.groups_of(uid).await? {
            let Ok(gid) = GroupId::parse(&gid) else {
                continue;
            };
            // The size first: a large group (no presence shared) costs one cheap read, not
            // a read of every member.
            if !matches!(self.groups.size(&gid).await?, Some(n) if n <= self.group_limit) {
                continue;
            }
            if let Some(members) = self.groups.members(&gid).await? {
                audience.extend(members);
            }
        }
        audience.remove(uid.as_str());
        Ok(audience)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Groups of fixed sizes, counting how often a member list is read.
    struct SizedGroups {
        sizes: Vec<(&'static str, usize)>,
        member_reads: AtomicUsize,
    }

    #[async_trait]
    impl GroupStore for SizedGroups {
        async fn create(&self, _: &GroupId, _: &[UserId]) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn members(&self, gid: &GroupId) -> Result<Option<Vec<String>>, StoreError> {
            self.member_reads.fetch_add(1, Ordering::Relaxed);
            let size = self.sizes.iter().find(|(g, _)| *g == gid.as_str());
            Ok(size.map(|(_, n)| (0..*n).map(|i| format!("m{i}")).collect()))
        }
        async fn size(&self, gid: &GroupId) -> Result<Option<usize>, StoreError> {
            Ok(self
                .sizes
                .iter()
                .find(|(g, _)| *g == gid.as_str())
                .map(|(_, n)| *n))
        }
        async fn add(&self, _: &GroupId, _: &[UserId]) -> Result<Option<Vec<String>>, StoreError> {
            Ok(None)
        }
        async fn remove(&self, _: &GroupId, _: &UserId) -> Result<Option<Vec<String>>, StoreError> {
            Ok(None)
        }
        async fn wake(&self, _: &GroupId, _: u64) -> Result<bool, StoreError> {
            Ok(false)
        }
    }

    /// One 1:1 peer, and membership in a small and a large group.
    struct Contacts;

    #[async_trait]
    impl ContactStore for Contacts {
        async fn note_sent(&self, _: &UserId, _: &UserId) -> Result<(), StoreError> {
            Ok(())
        }
        async fn peers(&self, _: &UserId) -> Result<Vec<String>, StoreError> {
            Ok(vec!["peer".into()])
        }
        async fn joined(&self, _: &GroupId, _: &[UserId]) -> Result<(), StoreError> {
            Ok(())
        }
        async fn left(&self, _: &GroupId, _: &UserId) -> Result<(), StoreError> {
            Ok(())
        }
        async fn groups_of(&self, _: &UserId) -> Result<Vec<String>, StoreError> {
            Ok(vec!["group_small".into(), "group_large".into()])
        }
    }

    /// Fixed (blocker, blocked) pairs.
    struct Blocks(Vec<(&'static str, &'static str)>);

    #[async_trait]
    impl BlockStore for Blocks {
        async fn block(&self, _: &UserId, _: &UserId) -> Result<(), StoreError> {
            Ok(())
        }
        async fn unblock(&self, _: &UserId, _: &UserId) -> Result<(), StoreError> {
            Ok(())
        }
        async fn blocks(&self, blocker: &UserId, other: &UserId) -> Result<bool, StoreError> {
            Ok(self
                .0
                .iter()
                .any(|(b, o)| *b == blocker.as_str() && *o == other.as_str()))
        }
        async fn blocked_by(&self, blocker: &UserId) -> Result<Vec<String>, StoreError> {
            Ok(self
                .0
                .iter()
                .filter(|(b, _)| *b == blocker.as_str())
                .map(|(_, o)| (*o).to_owned())
                .collect())
        }
    }

    #[tokio::test]
    async fn a_blocker_is_left_out_of_the_blocked_users_presence_both_pushed_and_queried() {
        let groups = Arc::new(SizedGroups {
            sizes: vec![("group_small", 2)],
            member_reads: AtomicUsize::new(0),
        });
        // "me" blocks "m1"; "peer" blocks "me".
        let service = PresenceService::new(
            Arc::new(MemoryPresenceStore::default()),
            Arc::new(Contacts),
            groups,
            Arc::new(RecordingBus::default()),
            Arc::new(Blocks(vec![("me", "m1"), ("peer", "me")])),
            1_000,
            Duration::ZERO,
        );
        let me = UserId::parse("me").expect("uid");
        let audience = service.audience(&me).await.expect("audience");
        assert_eq!(audience.into_iter().collect::<Vec<_>>(), ["m0", "peer"]);
        // "me" asks: "peer" blocks "me" and is left out, as a stranger would be; "m1", whom
        // "me" blocks, is still answered (a block is one way).
        let asked = ["m0", "m1", "peer", "stranger"].map(str::to_owned);
        let online = service.online_for(&me, &asked).await.expect("online");
        assert_eq!(online, [("m0".to_owned(), false), ("m1".to_owned(), false)]);
    }

    /// The bodies of the presence events published, in order.
    #[derive(Default)]
    struct RecordingBus(std::sync::Mutex<Vec<String>>);

    impl RecordingBus {
        fn bodies(&self) -> Vec<String> {
            self.0.lock().map(|b| b.clone()).unwrap_or_default()
        }
    }

    #[async_trait]
    impl Bus for RecordingBus {
        async fn subscribe(&self, _: &[String]) -> Result<(), StoreError> {
            Ok(())
        }
        async fn unsubscribe(&self, _: &[String]) -> Result<(), StoreError> {
            Ok(())
        }
        async fn publish_live(
            &self,
            _: &UserId,
            _: Option<&str>,
            event: &WireEvent,
        ) -> Result<(), StoreError> {
            if let Ok(mut bodies) = self.0.lock() {
                bodies.push(event.body.clone());
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_group_over_the_limit_is_left_out_without_reading_its_members() {
        let groups = Arc::new(SizedGroups {
            sizes: vec![("group_small", 2), ("group_large", 10_000)],
            member_reads: AtomicUsize::new(0),
        });
        let announcer = Announcer {
            store: Arc::new(MemoryPresenceStore::default()),
            offline_grace: Duration::ZERO,
            contacts: Arc::new(Contacts),
            groups: groups.clone(),
            bus: Arc::new(RecordingBus::default()),
            blocks: Arc::new(Blocks(vec![])),
            group_limit: 1_000,
            observer: Arc::default(),
        };
        let me = UserId::parse("me").expect("uid");
        let audience = announcer.audience(&me).await.expect("audience");
        assert_eq!(
            audience.into_iter().collect::<Vec<_>>(),
            ["m0", "m1", "peer"]
        );
        // Every presence change of each of 10,000 members would otherwise read the whole
        // list: O(N²) work for one large group (seen as half the nodes' CPU in a benchmark).
        assert_eq!(groups.member_reads.load(Ordering::Relaxed), 1);
    }

    /// A service whose only audience is one peer, with a 2 s offline grace.
    fn service_recording(store: Arc<MemoryPresenceStore>) -> (PresenceService, Arc<RecordingBus>) {
        let bus = Arc::new(RecordingBus::default());
        let no_groups = Arc::new(SizedGroups {
            sizes: vec![],
            member_reads: AtomicUsize::new(0),
        });
        let service = PresenceService::new(
            store,
            Arc::new(Contacts),
            no_groups,
            bus.clone(),
            Arc::new(Blocks(vec![])),
            1_000,
            Duration::from_secs(2),
        );
        (service, bus)
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_within_the_grace_announces_no_offline_and_a_real_leave_does() {
        let store = Arc::new(MemoryPresenceStore::default());
        let (presence, bus) = service_recording(store);
        let alice = UserId::parse("alice").expect("uid");
        presence.socket_up(&alice).await;
        // A reload: the only tab goes and a new one comes 100 ms later.
        presence.socket_down(&alice).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        presence.socket_up(&alice).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        // A second "online" changes nothing for the audience; an "offline" would flicker.
        assert_eq!(
            bus.bodies(),
            ["online", "online"],
            "no offline/online flicker"
        );
        // Leaving for good is announced once the grace is over, not before.
        presence.socket_down(&alice).await;
        tokio::time::sleep(Duration::from_millis(1_900)).await;
        assert_eq!(bus.bodies(), ["online", "online"], "offline held back");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(bus.bodies(), ["online", "online", "offline"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_node_sends_its_held_offlines_when_their_grace_ends() {
        let store = Arc::new(MemoryPresenceStore::default());
        let (presence, bus) = service_recording(store);
        let alice = UserId::parse("alice").expect("uid");
        presence.socket_up(&alice).await;
        presence.socket_down(&alice).await;
        let start = Instant::now();
        presence.flush().await;
        assert_eq!(
            bus.bodies(),
            ["online", "offline"],
            "sent before flush returns"
        );
        assert!(
            start.elapsed() <= Duration::from_secs(2),
            "within one grace"
        );
        // Nothing is sent twice by the announcer's own timer.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(bus.bodies(), ["online", "offline"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_held_again_after_coming_back_gets_a_full_grace() {
        let store = Arc::new(MemoryPresenceStore::default());
        let (presence, bus) = service_recording(store);
        let alice = UserId::parse("alice").expect("uid");
        presence.socket_up(&alice).await;
        presence.socket_down(&alice).await; // held until 2.0 s
        tokio::time::sleep(Duration::from_millis(100)).await;
        presence.socket_up(&alice).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        presence.socket_down(&alice).await; // held again, until 2.2 s
        tokio::time::sleep(Duration::from_millis(1_900)).await; // 2.1 s
        assert_eq!(
            bus.bodies(),
            ["online", "online"],
            "the first deadline was dropped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await; // 2.3 s
        assert_eq!(bus.bodies(), ["online", "online", "offline"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_offline_is_dropped_when_the_store_has_the_user_online_again() {
        let store = Arc::new(MemoryPresenceStore::default());
        let (presence, bus) = service_recording(store.clone());
        let alice = UserId::parse("alice").expect("uid");
        presence.socket_up(&alice).await;
        presence.socket_down(&alice).await;
        // Online again without this node's announcer hearing it (as when the new socket is
        // on another node, which announces its own "online").
        assert!(store.socket_up(&alice).await.expect("store"));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(bus.bodies(), ["online"]);
    }
}
