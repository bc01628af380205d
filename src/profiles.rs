//! The chat server's side of the profile service: a profile update published on Redis
//! (channel [`PROFILE_CHANNEL`]) reaches, as a live `profile` event, every connected user who
//! shares a conversation or a group with its owner; and signup creates the new account's
//! profile (when `WEBCHAT_PROFILE_URL` is set).
//!
//! Without Redis (one node on the embedded store) nothing is published: there the web client
//! says that its profile changed (`POST /api/v1/me/profile-changed`) and the chat server reads
//! the saved profile from the profile service itself and shares it ([`ProfileRefresher`]), so
//! only what the profile service stored is ever sent, never what a client claims.
//!
//! Every node receives every update and delivers to its own sockets only, so each contact
//! gets one event whichever node holds them.

use std::{sync::Arc, time::Duration};

use fred::clients::SubscriberClient;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{BusMessage, Router},
    domain::{UserId, WireEvent},
    presence::PresenceService,
    storage::{redis::on_channel, StoreError},
};

/// Where the profile service publishes each updated profile (its JSON).
pub const PROFILE_CHANNEL: &str = "wc:profiles";

/// Turns profile updates into `profile` events for the local sockets of the owner's contacts.
#[derive(Clone)]
pub struct ProfileSharer {
    presence: PresenceService,
    router: Arc<Router>,
}

impl ProfileSharer {
    /// A sharer over the node's presence audience and local sockets.
    pub fn new(presence: PresenceService, router: Arc<Router>) -> Self {
        Self { presence, router }
    }

    /// Delivers `profile_json` (the profile service's profile object) to the owner's contacts
    /// connected here. Returns how many users it reached.
    pub async fn share(&self, profile_json: &str) -> Result<usize, StoreError> {
        let Some(owner) = serde_json::from_str::<serde_json::Value>(profile_json)
            .ok()
            .and_then(|v| v.get("uid").and_then(|u| u.as_str()).map(str::to_owned))
            .and_then(|uid| UserId::parse(&uid).ok())
        else {
            tracing::warn!("profile update without a valid uid ignored");
            return Ok(0);
        };
        let audience = self.presence.audience(&owner).await?;
        let event = WireEvent::new("profile", owner.as_str(), "", "", profile_json.to_owned());
        let mut reached = 0;
        for member in audience.into_iter().filter(|m| self.router.is_local(m)) {
            let mut event = event.clone();
            event.to = member.clone();
            self.router.deliver(
                &member,
                BusMessage::Live {
                    skip_socket: None,
                    event: Arc::new(event),
                },
            );
            reached += 1;
        }
        Ok(reached)
    }

    /// Subscribes to [`PROFILE_CHANNEL`] and shares every update until `shutdown`. Profile
    /// events are live-only: a missed one is read over REST later.
    pub async fn listen(
        self,
        subscriber: SubscriberClient,
        shutdown: CancellationToken,
    ) -> Result<(), StoreError> {
        on_channel(
            &subscriber,
            PROFILE_CHANNEL,
            "profile updates",
            shutdown,
            move |json| {
                let sharer = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = sharer.share(&json).await {
                        tracing::warn!(error = %e, "profile update not shared");
                    }
                });
            },
        )
        .await
    }
}

/// Profile reads from the profile service at once, per node: a refresh beyond them is
/// refused `rate_limited` rather than queued.
const REFRESH_CONCURRENCY: usize = 16;
/// Longest wait for the profile service.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest profile body read (the profile service's own limits keep it far smaller).
const MAX_PROFILE_BYTES: usize = 8 * 1024;

/// Why a profile refresh did not share anything.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// Too many refreshes in flight on this node.
    #[error("too many profile refreshes at once; try again shortly")]
    Busy,
    /// The profile service could not be read.
    #[error("the profile service cannot be reached: {0}")]
    Unreachable(String),
    /// The profile service has no profile for the user.
    #[error("no profile saved for this user")]
    NoProfile,
    /// The audience could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Shares a user's saved profile with their contacts on request, for deployments where the
/// profile service does not publish updates (no Redis).
#[derive(Clone)]
pub struct ProfileRefresher {
    /// The profile service (`WEBCHAT_PROFILE_URL`); none: nothing to read, nothing shared.
    base_url: Option<String>,
    /// Updates come over Redis already ([`ProfileSharer`]): a refresh has nothing to add.
    published: bool,
    presence: PresenceService,
    http: reqwest::Client,
    permits: Arc<Semaphore>,
}

impl ProfileRefresher {
    /// A refresher reading from `base_url`; `published`: the node gets updates over Redis.
    pub fn new(base_url: Option<String>, published: bool, presence: PresenceService) -> Self {
        Self {
            base_url,
            published,
            presence,
            http: reqwest::Client::new(),
            permits: Arc::new(Semaphore::new(REFRESH_CONCURRENCY)),
        }
    }

    /// Reads `uid`'s saved profile and sends it as a `profile` event to `uid`'s contacts and
    /// other sockets. Returns how many users it was addressed to (0 when updates come over
    /// Redis, or no profile service is configured).
    pub async fn refresh(&self, uid: &UserId) -> Result<usize, RefreshError> {
        let Some(base) = self.base_url.as_deref().filter(|_| !self.published) else {
            return Ok(0);
        };
        let _permit = self.permits.try_acquire().map_err(|_| RefreshError::Busy)?;
        let url = format!("{}/api/v1/profiles/{uid}", base.trim_end_matches('/'));
        let res = self
            .http
            .get(&url)
            .timeout(REFRESH_TIMEOUT)
            .send()
            .await
            .map_err(|e| RefreshError::Unreachable(e.to_string()))?;
        if res.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(RefreshError::NoProfile);
        }
        if !res.status().is_success() {
            return Err(RefreshError::Unreachable(format!("HTTP {}", res.status())));
        }
        let body = res
            .bytes()
            .await
            .map_err(|e| RefreshError::Unreachable(e.to_string()))?;
        if body.len() > MAX_PROFILE_BYTES {
            return Err(RefreshError::Unreachable("profile too large".into()));
        }
        let profile: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| RefreshError::Unreachable(format!("not a profile: {e}")))?;
        // The owner is the session's user: a profile service answering for someone else
        // (a misrouted proxy) is not shared as theirs.
        if profile.get("uid").and_then(|u| u.as_str()) != Some(uid.as_str()) {
            return Err(RefreshError::Unreachable(
                "the answer names another user".into(),
            ));
        }
        let event = WireEvent::new("profile", uid.as_str(), "", "", profile.to_string());
        let reached = self.presence.tell_audience(uid, event).await?;
        tracing::debug!(uid = %uid, reached, "profile change shared");
        Ok(reached)
    }
}

/// Creates the profile of a new account in the profile service at `base_url`, with the
/// account's own token. Failures are logged, not returned: the account exists either way and
/// the user can set a profile later.
pub async fn create_profile(base_url: &str, uid: &UserId, name: &str, token: &str) {
    let url = format!("{}/api/v1/profiles/{uid}", base_url.trim_end_matches('/'));
    let body = serde_json::json!({ "name": name, "status": "", "avatarUrl": "" });
    let result = reqwest::Client::new()
        .put(&url)
        .bearer_auth(token)
        .timeout(Duration::from_secs(3))
        .json(&body)
        .send()
        .await;
    match result {
        Ok(res) if res.status().is_success() => {}
        Ok(res) => {
            tracing::warn!(uid = %uid, status = %res.status(), "profile service refused the new profile")
        }
        Err(e) => tracing::warn!(uid = %uid, error = %e, "profile service unreachable at signup"),
    }
}
