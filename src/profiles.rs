//! The chat server's side of the profile service: a profile update published on Redis
//! (channel [`PROFILE_CHANNEL`]) reaches, as a live `profile` event, every connected user who
//! shares a conversation or a group with its owner; and signup creates the new account's
//! profile (when `WEBCHAT_PROFILE_URL` is set).
//!
//! Every node receives every update and delivers to its own sockets only, so each contact
//! gets one event whichever node holds them.

use std::{sync::Arc, time::Duration};

use fred::clients::SubscriberClient;
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
