//! Start-up: picks the back-ends from the settings, wires services, binds the listener.
//! The only place that names fred or redb types outside their own modules.

use std::{future::Future, net::SocketAddr, sync::Arc};

use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    accounts::{
        hashing::HashPool, token::TokenSigner, token_key, AccountService, AccountStore,
        DynamoAccountStore, EmbeddedAccountStore, RedisAccountStore,
    },
    attachments::{
        AttachmentLimits, AttachmentService, AttachmentStore, BlobStore, EmbeddedAttachmentStore,
        FsBlobStore, RedisAttachmentStore, S3BlobStore,
    },
    blocks::{BlockService, BlockStore, EmbeddedBlockStore, RedisBlockStore},
    bus::{Bus, MemoryBus, RedisBus, Router},
    calllog::{
        drain,
        queue::{EmbeddedQueue, LogQueue, RedisQueue},
        retention, CallLog,
    },
    channels::{
        ChannelFeed, ChannelService, ChannelStore, EmbeddedChannelStore, FeedMessage,
        LocalChannelFeed, RedisChannelFeed, RedisChannelStore, ServiceKeys,
    },
    chat::{ChatDeps, ChatService},
    config::{AuthMode, Settings},
    gateway::{self, channel_hub::ChannelHub, sessions::TokenSockets},
    groups::{DurableGroupStore, EmbeddedGroupStore, GroupStore, RedisGroupStore},
    health::Health,
    http,
    inbox::{EmbeddedInbox, InboxLimits, InboxService, InboxStore, RedisInbox},
    lifecycle::{EmbeddedMessageIndex, LifecycleService, MessageIndex, RedisMessageIndex},
    limits::{KeyedBuckets, LoginThrottle, TrustedProxies},
    presence::{
        ContactStore, EmbeddedContactStore, MemoryPresenceStore, PresenceService, PresenceStore,
        RedisContactStore, RedisPresenceStore,
    },
    receipts::{EmbeddedReceiptStore, ReceiptStore, RedisReceiptStore},
    server::ConnectionLimits,
    state::{AppState, Limits},
    storage::{
        embedded::EmbeddedDb,
        redis::RedisHandles,
        redis_table::RedisTable,
        table::{EmbeddedTable, SortedTable},
        StoreError,
    },
    support::{
        DynamoRoleStore, EmbeddedSupportStore, RedisSupportStore, RoleStore, SupportService,
        TicketStore,
    },
    telemetry::Metrics,
    webhooks::{
        EmbeddedWebhookStore, RedisWebhookStore, TargetPolicy, VapidKey, WebhookDeps,
        WebhookService, WebhookStore,
    },
};

/// Each websocket's read buffer. Client frames are small (acks are a few bytes, a message
/// at the Body limit a few KiB; larger ones grow the buffer), and tungstenite zero-fills the
/// whole buffer on a socket's first read, so every idle socket holds it: socketioxide's
/// default of 4 KiB cost 3 KiB more per connection.
const WS_READ_BUFFER_BYTES: usize = 1024;

/// How long a stopping node waits for its held "offline" announcements to go out, after
/// their grace.
const PRESENCE_FLUSH_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Binding or serving the listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// A back-end could not be opened.
    #[error("back-end: {0}")]
    Store(#[from] StoreError),
    /// A setting is invalid.
    #[error("configuration: {0}")]
    Config(String),
}

/// A built, bound, not yet running chat server node.
pub struct Application {
    listener: TcpListener,
    app: axum::Router,
    io: SocketIo,
    state: AppState,
    local_addr: SocketAddr,
    /// What one client may hold of the node's connections.
    connection_limits: ConnectionLimits,
    /// Closed last on shutdown, releasing the data dir.
    embedded: Option<EmbeddedDb>,
}

impl Application {
    /// Opens the back-ends the settings name and binds the listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let (router, subscription_requests) = Router::new(metrics.clone());
        let proxies = TrustedProxies::parse(settings.trusted_proxies.as_deref().unwrap_or(""))
            .map_err(StartupError::Config)?;
        let limits = InboxLimits {
            max_len: settings.inbox_max_len.max(1),
            max_age_secs: settings.inbox_max_age_secs,
            dedupe_window_secs: settings.dedupe_window_secs,
        };

        let Backends {
            presence: presence_store,
            contacts,
            blocks,
            attachments: attachment_records,
            accounts: accounts_store,
            inbox,
            groups,
            receipts,
            bus,
            health,
            token_key: secret,
            embedded,
            calllog_queue,
            calllog_table,
            redis_calllog_table,
            redis_subscriber,
            redis_groups,
            login_counter,
            channels: channel_store,
            channel_feed,
            channel_feed_rx,
            message_index,
            tickets,
            roles,
            webhooks: webhook_store,
            vapid,
        } = match &settings.redis_url {
            Some(url) => Backends::redis(url, &settings, &router, limits, &shutdown).await?,
            None => Backends::embedded(&settings, &router, limits, &shutdown)?,
        };
        router.keep_subscribed(bus.clone(), subscription_requests, shutdown.clone());
        // DynamoDB, when configured, is the system of record for accounts, group membership
        // and the call log; Redis (or the embedded store) keeps inboxes and hot state.
        let (accounts_store, groups, calllog_table, health, roles) = match &settings
            .dynamodb_endpoint
        {
            Some(endpoint) => {
                let table = |name: &str| {
                    let name = format!("{}{name}", settings.table_prefix);
                    async move { crate::storage::dynamo::connect(endpoint, &name).await }
                };
                let (accounts_table, groups_table, calllog_table, roles_table) = tokio::try_join!(
                    table("accounts"),
                    table("groups"),
                    table("calllog"),
                    table("roles")
                )?;
                let roles: Arc<dyn RoleStore> = Arc::new(DynamoRoleStore::new(roles_table));
                let groups: Arc<dyn GroupStore> = match &redis_groups {
                    Some(hot) => Arc::new(DurableGroupStore::new(groups_table, hot.clone())),
                    None => groups,
                };
                let health =
                    Health::WithDynamoDb(Box::new(health), Arc::new(accounts_table.clone()));
                let accounts: Arc<dyn AccountStore> =
                    Arc::new(DynamoAccountStore::new(accounts_table));
                let calllog: Arc<dyn SortedTable> = Arc::new(calllog_table);
                (accounts, groups, calllog, health, roles)
            }
            None => (accounts_store, groups, calllog_table, health, roles),
        };
        // Redis as the call-log table keeps it in memory: bounded unless told otherwise.
        let trimmed_table = match (&settings.dynamodb_endpoint, redis_calllog_table) {
            (None, Some(table)) => {
                let days = settings.call_log_retention_days;
                if days == 0 {
                    tracing::warn!(
                        "Redis is the call-log table and --call-log-retention-days is 0: it keeps every call-log row and grows with every message; long-term history belongs in DynamoDB (--dynamodb-endpoint)"
                    );
                    None
                } else {
                    tracing::warn!(
                        retention_days = days,
                        "Redis is the call-log table: call-log rows older than {days} days are trimmed; long-term history belongs in DynamoDB (--dynamodb-endpoint)"
                    );
                    Some((table, days))
                }
            }
            _ => None,
        };
        let attachments = attachment_service(
            &settings,
            attachment_records,
            groups.clone(),
            trimmed_table.as_ref().map(|(_, days)| *days),
        )
        .await?;
        let calllog_queue = settings.call_log.then_some(calllog_queue);
        if let Some(queue) = &calllog_queue {
            tokio::spawn(drain::run(
                queue.clone(),
                calllog_table.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
        } else {
            tracing::warn!("the call log is switched off: conversation events are not logged");
        }
        let calllog = CallLog::new(calllog_queue, calllog_table, groups.clone());

        let accounts = AccountService::new(
            accounts_store,
            TokenSigner::new(secret),
            settings.token_ttl_secs,
            Arc::new(HashPool::new(settings.hash_limits(), metrics.clone())),
        );
        let blocks = BlockService::new(
            blocks,
            (settings.auth == AuthMode::Token).then(|| accounts.clone()),
        );
        let presence = PresenceService::new(
            presence_store.clone(),
            contacts,
            groups.clone(),
            bus.clone(),
            blocks.store().clone(),
            settings.presence_group_limit,
            std::time::Duration::from_millis(settings.presence_offline_grace_ms),
        );
        let every = std::time::Duration::from_secs(settings.presence_heartbeat_secs.max(1));
        // Tracked: a stopping node waits for a heartbeat in flight (it may declare another node
        // dead and queue its users' "offline"s) before it flushes presence.
        let tasks = TaskTracker::new();
        tasks.spawn(presence.clone().run_heartbeats(
            presence_store.clone(),
            router.clone(),
            every,
            shutdown.clone(),
        ));
        if let Some((table, days)) = trimmed_table {
            tasks.spawn(retention::run(
                table,
                days,
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        tasks.spawn(attachments.clone().run_sweeps(
            std::time::Duration::from_secs(settings.attachments.attachment_sweep_secs),
            shutdown.clone(),
        ));
        let token_sockets = TokenSockets::new(login_counter.clone());
        if let Some(subscriber) = &redis_subscriber {
            token_sockets
                .clone()
                .listen(subscriber.clone(), shutdown.clone())
                .await?;
            crate::profiles::ProfileSharer::new(presence.clone(), router.clone())
                .listen(subscriber.clone(), shutdown.clone())
                .await?;
        }
        let service_keys =
            ServiceKeys::parse(settings.service_keys.as_deref()).map_err(StartupError::Config)?;
        let channels = ChannelService::new(
            channel_store.clone(),
            settings.general_channel,
            settings.max_body_bytes,
            settings.dedupe_window_secs,
        )
        .with_service_keys(service_keys);
        let channel_hub = ChannelHub::new(channel_feed, channel_store);
        tokio::spawn(channel_hub.clone().run(channel_feed_rx, shutdown.clone()));
        if settings.guests {
            tracing::info!(
                "guest sockets are on: anyone may connect as a guest and read guest channels"
            );
        }
        let lifecycle =
            LifecycleService::new(message_index, calllog.clone(), settings.edit_window_secs);
        let hooks = &settings.webhooks;
        if hooks.webhook_allow_private {
            tracing::warn!("WEBCHAT_WEBHOOK_ALLOW_PRIVATE is on: webhooks and push may call http and private, loopback and link-local addresses (development and tests only)");
        }
        let webhooks = WebhookService::new(WebhookDeps {
            store: webhook_store,
            presence: presence_store.clone(),
            inbox: inbox.clone(),
            accounts: accounts.clone(),
            metrics: metrics.clone(),
            policy: hooks.delivery_policy(),
            targets: TargetPolicy {
                allow_private: hooks.webhook_allow_private,
            },
            vapid,
        })
        .map_err(|e| StartupError::Config(format!("webhook HTTP client: {e}")))?;
        // Before the node serves: events from its first sockets go only where an endpoint
        // takes them. Should the store not answer, every type counts as taken until the
        // worker's next read.
        if let Err(e) = webhooks.refresh_endpoint_kinds().await {
            tracing::warn!(error = %e, "webhook endpoints not read at start-up");
        }
        presence.observe(Arc::new(webhooks.clone()));
        tasks.spawn(webhooks.clone().run(shutdown.clone()));
        let chat = ChatService::new(ChatDeps {
            lifecycle: lifecycle.clone(),
            blocks: blocks.clone(),
            presence: presence.clone(),
            calllog: calllog.clone(),
            attachments: attachments.clone(),
            webhooks: webhooks.clone(),
            accounts: accounts.clone(),
            inbox: inbox.clone(),
            tickets: tickets.clone(),
            bus,
            groups: groups.clone(),
            receipts,
            metrics: metrics.clone(),
            require_known_recipients: settings.auth == AuthMode::Token,
            max_group_size: settings.max_group_size,
            group_idle_secs: settings.group_idle_secs,
        });
        let support = SupportService::new(
            roles,
            tickets,
            chat.clone(),
            inbox.clone(),
            webhooks.clone(),
        );
        let groups_for_replay = groups.clone();
        let state = AppState {
            support,
            lifecycle,
            settings: settings.clone(),
            accounts,
            chat,
            attachments,
            blocks,
            calllog,
            groups,
            router,
            inbox: InboxService::new(inbox, groups_for_replay, limits, metrics.clone()),
            profiles: crate::profiles::ProfileRefresher::new(
                settings.profile_url.clone(),
                redis_subscriber.is_some(),
                presence.clone(),
            ),
            presence,
            channels,
            channel_hub: channel_hub.clone(),
            webhooks,
            metrics,
            health,
            token_sockets,
            connecting: Arc::default(),
            limits: Arc::new(Limits {
                proxies,
                connects: KeyedBuckets::new(settings.connect_rate, settings.connect_burst),
                signups: KeyedBuckets::new(settings.signup_rate, settings.signup_burst),
                logins: LoginThrottle::new(
                    login_counter,
                    settings.login_max_failures,
                    settings.login_max_failures_per_address,
                    std::time::Duration::from_secs(settings.login_window_secs),
                ),
            }),
            shutdown,
            tasks,
        };

        let frame_limit = frame_limit(settings.max_body_bytes, settings.max_frame_bytes);
        let (socket_layer, io) = SocketIo::builder()
            .with_state(state.clone())
            .ack_timeout(settings.ack_timeout())
            .connect_timeout(settings.handshake_timeout())
            .max_buffer_size(settings.socket_queue.max(128))
            .max_payload(u64::try_from(frame_limit).unwrap_or(u64::MAX))
            .ws_max_message_size(frame_limit)
            .ws_max_frame_size(frame_limit)
            .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
            .build_layer();
        channel_hub.set_io(io.clone());
        gateway::register(&io, &state);
        let app = http::router(state.clone())
            .layer(socket_layer)
            // Runs before socket.io keeps the request parts.
            .layer(axum::middleware::map_request(gateway::own_request_parts));
        // Outside socket.io, so its polling and websocket requests get the same policy as REST
        // (socket.io-client 1.x/2.x polls with credentials, as socket.io's own `cors` allows).
        let app = match http::cors(settings.cors_origins.as_deref(), http::Credentials::Allowed) {
            Some(cors) => app.layer(cors),
            None => app,
        };
        // Outermost: every answer gets them, CORS preflights and socket.io's included.
        let app = app
            .layer(axum::middleware::map_response_with_state(
                http::security_headers(settings.profile_url.as_deref()),
                http::add_security_headers,
            ))
            .layer(axum::middleware::map_request_with_state(
                settings.body_timeout(),
                crate::server::bound_body_time,
            ));

        if settings.cors_origins.as_deref().map(str::trim) == Some("*") {
            tracing::warn!("WEBCHAT_CORS_ORIGINS is *: any web page may call this server from a browser, with credentials (webchat authenticates by token, never by cookie; list the origins instead where you can)");
        }
        if settings.auth == AuthMode::Open {
            tracing::warn!("auth mode is OPEN: anyone who can reach this port can act as any uid; use only on trusted networks");
        }
        let connection_limits = ConnectionLimits {
            header_timeout: settings.header_timeout(),
            max_per_address: settings.max_connections_per_address,
            exempt: state.limits.proxies.clone(),
        };
        let listener = TcpListener::bind(settings.listen).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            app,
            io,
            state,
            local_addr,
            connection_limits,
            embedded,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The node's webhook service (the support desk emits ticket events through it; tests
    /// emit them the same way).
    pub fn webhooks(&self) -> WebhookService {
        self.state.webhooks.clone()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then closes every socket (clients reconnect
    /// elsewhere), lets delivery tasks confirm what was acked, and returns.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let Self {
            listener,
            app,
            io,
            state,
            local_addr,
            connection_limits,
            embedded,
        } = self;
        let stop = state.shutdown.clone();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown.await;
                stop.cancel();
            }
        });
        tracing::info!(addr = %local_addr, "listening");
        let graceful = {
            let stop = stop.clone();
            async move {
                stop.cancelled().await;
                io.close().await;
            }
        };
        // Header, idle and connection-count bounds, and the client address (connect info)
        // for connection and login limits.
        crate::server::serve(listener, app, connection_limits, graceful).await;
        state.tasks.close();
        state.tasks.wait().await;
        // The sockets' users are off the store now; what presence held back goes out (after
        // its grace).
        let grace = std::time::Duration::from_millis(state.settings.presence_offline_grace_ms);
        if tokio::time::timeout(grace + PRESENCE_FLUSH_PATIENCE, state.presence.flush())
            .await
            .is_err()
        {
            tracing::warn!("held presence announcements not all sent before stopping");
        }
        if let Some(db) = embedded {
            db.close();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The back-ends one node runs on, chosen by the settings.
struct Backends {
    presence: Arc<dyn PresenceStore>,
    contacts: Arc<dyn ContactStore>,
    /// Who blocks whom (the same back-end as the contact index).
    blocks: Arc<dyn BlockStore>,
    /// Attachment records (the same back-end as inboxes, so every node decides access).
    attachments: Arc<dyn AttachmentStore>,
    accounts: Arc<dyn AccountStore>,
    inbox: Arc<dyn InboxStore>,
    groups: Arc<dyn GroupStore>,
    receipts: Arc<dyn ReceiptStore>,
    bus: Arc<dyn Bus>,
    health: Health,
    token_key: Vec<u8>,
    /// Set in embedded mode: closed last on shutdown.
    embedded: Option<EmbeddedDb>,
    /// The call log's write-behind queue.
    calllog_queue: Arc<dyn LogQueue>,
    /// The call-log table unless DynamoDB is configured.
    calllog_table: Arc<dyn SortedTable>,
    /// Redis: the same table, for its retention trim.
    redis_calllog_table: Option<Arc<RedisTable>>,
    /// Redis: the subscriber connection (profile updates, token revocations).
    redis_subscriber: Option<fred::clients::SubscriberClient>,
    /// Redis: group membership in Redis (the hot copy when DynamoDB holds the record).
    redis_groups: Option<RedisGroupStore>,
    /// Redis: where failed logins are counted (shared by the nodes).
    login_counter: Option<fred::clients::Pool>,
    /// Channel settings, histories and presence.
    channels: Arc<dyn ChannelStore>,
    /// How this node starts and stops listening to a channel's feed.
    channel_feed: Arc<dyn ChannelFeed>,
    /// The channel feeds this node listens to, in arrival order.
    channel_feed_rx: tokio::sync::mpsc::UnboundedReceiver<FeedMessage>,
    /// Messages by MsgID for replies, edits, deletes and reactions (§11).
    message_index: Arc<dyn MessageIndex>,
    /// Support tickets (§10).
    tickets: Arc<dyn TicketStore>,
    /// Roles, unless DynamoDB holds them (§10).
    roles: Arc<dyn RoleStore>,
    /// Webhook endpoints, push subscriptions and the delivery queue (§13).
    webhooks: Arc<dyn WebhookStore>,
    /// The key Web Push requests are signed with.
    vapid: VapidKey,
}

impl Backends {
    /// Redis holds accounts and inboxes and carries the bus.
    async fn redis(
        url: &str,
        settings: &Settings,
        router: &Arc<Router>,
        limits: InboxLimits,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartupError> {
        let redis = RedisHandles::connect(url).await?;
        let node = uuid::Uuid::new_v4().simple().to_string();
        let redis_groups = RedisGroupStore::new(redis.pool.clone(), settings.group_idle_secs);
        let calllog_stream = format!("wc:{}calllog", settings.table_prefix);
        let calllog_queue = RedisQueue::new(
            calllog_stream.clone(),
            redis.pool.clone(),
            redis.blocking.clone(),
            node.clone(),
        )
        .await?;
        let bus = RedisBus::new(&redis);
        bus.spawn_listener(router.clone(), shutdown.clone());
        let token_key = token_key::load(
            settings.token_secret.as_deref(),
            Some(&redis.pool),
            &settings.data_dir,
        )
        .await?;
        let calllog_table = Arc::new(RedisTable::new(redis.pool.clone()));
        let support = Arc::new(RedisSupportStore::new(redis.pool.clone()));
        let (feed_tx, channel_feed_rx) = tokio::sync::mpsc::unbounded_channel();
        let channel_feed = RedisChannelFeed::new(&redis);
        channel_feed.spawn_listener(&redis, feed_tx, shutdown.clone());
        let subject = &settings.webhooks.vapid_subject;
        let vapid = match configured_vapid(settings)? {
            Some(key) => key,
            None => crate::webhooks::vapid_in_redis(&redis.pool, subject).await?,
        };
        Ok(Self {
            webhooks: Arc::new(RedisWebhookStore::new(
                redis.pool.clone(),
                &settings.table_prefix,
            )),
            vapid,
            channels: Arc::new(RedisChannelStore::new(&redis, node.clone())),
            channel_feed: Arc::new(channel_feed),
            channel_feed_rx,
            accounts: Arc::new(RedisAccountStore::new(redis.pool.clone())),
            // With the call log on, an append queues the event's log record in the same
            // script call (one Redis only: on a cluster the stream is in another slot).
            inbox: Arc::new(RedisInbox::new(
                redis.pool.clone(),
                redis.cluster,
                limits,
                settings.call_log.then_some(calllog_stream),
            )),
            presence: Arc::new(RedisPresenceStore::new(
                redis.pool.clone(),
                node,
                settings.presence_timeout_secs,
            )),

            contacts: Arc::new(RedisContactStore::new(redis.pool.clone())),
            blocks: Arc::new(RedisBlockStore::new(redis.pool.clone())),
            attachments: Arc::new(RedisAttachmentStore::new(
                redis.pool.clone(),
                &settings.table_prefix,
            )),
            groups: Arc::new(redis_groups.clone()),
            redis_groups: Some(redis_groups),
            login_counter: Some(redis.pool.clone()),
            message_index: Arc::new(RedisMessageIndex::new(redis.pool.clone())),
            tickets: support.clone(),
            roles: support,
            receipts: Arc::new(RedisReceiptStore::new(
                redis.pool.clone(),
                settings.inbox_max_age_secs,
                settings.dedupe_window_secs,
            )),
            bus: Arc::new(bus),
            health: Health::Redis(redis.pool.clone()),
            token_key,
            embedded: None,
            calllog_queue: Arc::new(calllog_queue),
            calllog_table: calllog_table.clone(),
            redis_calllog_table: Some(calllog_table),
            redis_subscriber: Some(redis.subscriber.clone()),
        })
    }

    /// One redb file in the data dir and an in-process bus.
    fn embedded(
        settings: &Settings,
        router: &Arc<Router>,
        limits: InboxLimits,
        shutdown: &CancellationToken,
    ) -> Result<Self, StartupError> {
        let db = EmbeddedDb::open(&settings.data_dir)?;
        let bus = Arc::new(MemoryBus::new(router.clone()));
        let inbox = Arc::new(EmbeddedInbox::new(db.clone(), bus.clone(), limits));
        let receipts = Arc::new(EmbeddedReceiptStore::new(db.clone()));
        tokio::spawn(sweep_periodically(
            inbox.clone(),
            receipts.clone(),
            limits.max_age_secs,
            shutdown.clone(),
        ));
        let token_key = match token_key::configured(settings.token_secret.as_deref()) {
            Some(key) => key,
            None => token_key::in_data_dir(&settings.data_dir)?,
        };
        let (feed_tx, channel_feed_rx) = tokio::sync::mpsc::unbounded_channel();
        let support = Arc::new(EmbeddedSupportStore::new(db.clone()));
        let vapid = match configured_vapid(settings)? {
            Some(key) => key,
            None => crate::webhooks::vapid_in_data_dir(
                &settings.data_dir,
                &settings.webhooks.vapid_subject,
            )?,
        };
        Ok(Self {
            tickets: support.clone(),
            roles: support,
            webhooks: Arc::new(EmbeddedWebhookStore::new(db.clone())),
            vapid,
            channels: Arc::new(EmbeddedChannelStore::new(db.clone(), feed_tx)),
            channel_feed: Arc::new(LocalChannelFeed),
            channel_feed_rx,
            accounts: Arc::new(EmbeddedAccountStore::new(db.clone())),
            inbox,
            groups: Arc::new(EmbeddedGroupStore::new(db.clone())),
            presence: Arc::new(MemoryPresenceStore::default()),

            contacts: Arc::new(EmbeddedContactStore::new(db.clone())),
            blocks: Arc::new(EmbeddedBlockStore::new(db.clone())),
            attachments: Arc::new(EmbeddedAttachmentStore::new(db.clone())),
            receipts,
            bus,
            health: Health::Embedded,
            token_key,
            calllog_queue: Arc::new(EmbeddedQueue::new(db.clone())),
            calllog_table: Arc::new(EmbeddedTable::new(db.clone())),
            redis_calllog_table: None,
            redis_subscriber: None,
            redis_groups: None,
            login_counter: None,
            message_index: Arc::new(EmbeddedMessageIndex::new(db.clone())),
            embedded: Some(db),
        })
    }
}

/// The VAPID key `WEBCHAT_VAPID_PRIVATE_KEY` gives, if any (a malformed one stops start-up).
fn configured_vapid(settings: &Settings) -> Result<Option<VapidKey>, StartupError> {
    let hooks = &settings.webhooks;
    match hooks.vapid_private_key.as_deref() {
        Some(encoded) => VapidKey::from_private(encoded, &hooks.vapid_subject)
            .map(Some)
            .map_err(|e| StartupError::Config(e.to_string())),
        None => Ok(None),
    }
}

/// The attachment service: records in `records`, bytes in the S3 bucket the settings name or
/// else the data dir. Attachments are kept as long as the messages that carry them: when the
/// call log keeps messages forever (embedded, DynamoDB, or Redis with retention 0) so are they;
/// when Redis trims the call log after `calllog_days`, or the call log is off (messages live
/// only in inboxes), a sent attachment goes once its last message is past both bounds.
async fn attachment_service(
    settings: &Settings,
    records: Arc<dyn AttachmentStore>,
    groups: Arc<dyn GroupStore>,
    calllog_days: Option<u32>,
) -> Result<AttachmentService, StartupError> {
    let config = &settings.attachments;
    let blobs: Arc<dyn BlobStore> = match (&config.s3_endpoint, &config.s3_bucket) {
        (Some(endpoint), Some(bucket)) => Arc::new(S3BlobStore::connect(endpoint, bucket).await?),
        _ => {
            if settings.redis_url.is_some() {
                tracing::warn!("attachments are stored in this node's data dir: with several nodes, set WEBCHAT_S3_ENDPOINT and WEBCHAT_S3_BUCKET (or share the data dir's attachments folder) so every node can serve them");
            }
            Arc::new(FsBlobStore::open(
                settings.data_dir.join("attachments").join("blobs"),
            )?)
        }
    };
    let inbox_age = settings.inbox_max_age_secs;
    let keep_sent_secs = if !settings.call_log {
        Some(inbox_age)
    } else {
        calllog_days.map(|days| (u64::from(days) * 86_400).max(inbox_age))
    };
    let limits = AttachmentLimits {
        max_bytes: config.max_attachment_bytes,
        max_pixels: config.attachment_max_pixels.max(1),
        orphan_after: std::time::Duration::from_secs(config.attachment_orphan_secs),
        keep_sent: keep_sent_secs.map(std::time::Duration::from_secs),
    };
    Ok(AttachmentService::new(
        records,
        blobs,
        groups,
        limits,
        settings.data_dir.join("attachments").join("tmp"),
    )?)
}

/// Sweeps expired idempotency keys and old receipt state from the embedded store every ten
/// minutes (Redis expires both by itself).
async fn sweep_periodically(
    inbox: Arc<EmbeddedInbox>,
    receipts: Arc<EmbeddedReceiptStore>,
    receipt_max_age_secs: u64,
    shutdown: CancellationToken,
) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                if let Err(e) = inbox.sweep_expired_keys().await {
                    tracing::warn!(error = %e, "sweep of expired idempotency keys, claims and shared bodies failed");
                }
                if let Err(e) = receipts.sweep_older_than(receipt_max_age_secs).await {
                    tracing::warn!(error = %e, "receipt state sweep failed");
                }
            }
        }
    }
}

/// The largest packet (websocket message, or long-polling request body) a client may send:
/// the configured frame size, but never less than a Body at the limit needs however its
/// characters are escaped (at worst `\u0001`, 6 bytes per byte, and 7 in an envelope sent as
/// a JSON string), with room for the other fields. Larger frames close the connection before
/// they are buffered (socketioxide's own websocket default is 64 MiB).
pub fn frame_limit(max_body_bytes: usize, max_frame_bytes: usize) -> usize {
    max_body_bytes
        .saturating_mul(8)
        .saturating_add(4096)
        .max(max_frame_bytes)
}
