//! The one cheap-to-clone state shared by axum handlers and socket handlers.

use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    accounts::AccountService,
    blocks::BlockService,
    bus::Router,
    calllog::CallLog,
    chat::ChatService,
    config::Settings,
    groups::GroupStore,
    health::Health,
    inbox::InboxService,
    limits::{KeyedBuckets, LoginThrottle, TrustedProxies},
    telemetry::Metrics,
};

/// The node-wide abuse limits.
pub struct Limits {
    /// New sockets per client address.
    pub connects: KeyedBuckets,
    /// Signups per client address.
    pub signups: KeyedBuckets,
    /// Login attempts (counted before the password check) per uid and per address.
    pub logins: LoginThrottle,
    /// The load balancers whose `X-Forwarded-For` names the client these limits count.
    pub proxies: TrustedProxies,
}

/// Everything a request or socket handler may need.
#[derive(Clone)]
pub struct AppState {
    /// The node's settings.
    pub settings: Arc<Settings>,
    /// Signup, login, token checks.
    pub accounts: AccountService,
    /// Chat commands.
    pub chat: ChatService,
    /// Uploads and downloads (REST `/attachments`).
    pub attachments: crate::attachments::AttachmentService,
    /// The support desk: roles, tickets (§10).
    pub support: crate::support::SupportService,
    /// Blocks (REST `/blocks`).
    pub blocks: BlockService,
    /// History and the admin call log.
    pub calllog: CallLog,
    /// Replies, edits, deletes, reactions (history needs when a member joined a group).
    pub lifecycle: crate::lifecycle::LifecycleService,
    /// Group membership (REST group view).
    pub groups: Arc<dyn GroupStore>,
    /// Local sockets by user.
    pub router: Arc<Router>,
    /// Replay, shared bodies and confirmation for the delivery tasks.
    pub inbox: InboxService,
    /// Channels: settings, history, publish (§9).
    pub channels: crate::channels::ChannelService,
    /// This node's channel subscribers and the hand-off of channel feeds to them.
    pub channel_hub: Arc<crate::gateway::channel_hub::ChannelHub>,
    /// Online state and presence events.
    pub presence: crate::presence::PresenceService,
    /// Shares a saved profile with the owner's contacts when no Redis carries updates.
    pub profiles: crate::profiles::ProfileRefresher,
    /// Webhook endpoints, push subscriptions and their delivery (§13).
    pub webhooks: crate::webhooks::WebhookService,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Back-end probes for `/health`.
    pub health: Health,
    /// This node's sockets by token id (logout closes them).
    pub token_sockets: Arc<crate::gateway::sessions::TokenSockets>,
    /// Sockets between the connect middleware and a handler (released if they never connect).
    pub connecting: Arc<crate::gateway::connecting::Connecting<socketioxide::extract::SocketRef>>,
    /// Connection-rate buckets and the failed-login throttle.
    pub limits: Arc<Limits>,
    /// Cancelled when the node shuts down.
    pub shutdown: CancellationToken,
    /// Per-socket tasks and the presence heartbeat, awaited on shutdown.
    pub tasks: TaskTracker,
}
