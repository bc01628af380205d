//! Socket authentication: the connect middleware and the per-socket session.

use socketioxide::extract::{SocketRef, State, TryData};

use crate::{config::AuthMode, domain::UserId, http::extractor::peer_address, state::AppState};

/// The authenticated user of a socket, stored in its extensions. In open mode it is set by
/// `join`; in token mode by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Session {
    /// Who this socket acts as.
    pub uid: UserId,
    /// The id of the token it authenticated with (none in open mode via `join`).
    pub jti: Option<String>,
    /// When that token expires, unix seconds: the socket is closed then, as a logout would
    /// close it (none in open mode via `join`).
    pub expires_at: Option<i64>,
}

/// Marks a guest socket (§9, in its extensions beside its [`Session`]): a server-made uid,
/// guest channels only, everything else `forbidden`.
#[derive(Debug, Clone, Copy)]
pub struct Guest;

/// Whether a connect asks to be a guest: `auth.guest: true`, or `?guest=1` (or `true`) for
/// Engine.IO 3 clients.
fn wants_guest(auth: Option<&serde_json::Value>, query: Option<&str>) -> bool {
    match auth.and_then(|a| a.get("guest")) {
        Some(flag) => flag.as_bool() == Some(true),
        None => matches!(query_param(query, "guest").as_deref(), Some("1" | "true")),
    }
}

/// How a socket acknowledges the stored events it is sent (contract §15), chosen at connect
/// and kept in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// Every stored event requests a socket.io ack (what every client gets unless it asks).
    #[default]
    PerEvent,
    /// Stored events are sent without an ack request; the client emits `ack {"Seq": N}` for
    /// the highest Seq it has processed.
    Cumulative,
}

impl AckMode {
    /// The mode a connect asks for: `auth.acks`, or `?acks=` for Engine.IO 3 clients (which
    /// send no auth object). Absent means per-event; an unknown value is refused rather than
    /// guessed, so a client never believes it acks cumulatively while it does not.
    fn requested(auth: Option<&serde_json::Value>, query: Option<&str>) -> Result<Self, Refused> {
        let from_auth = auth.and_then(|a| a.get("acks"));
        let named = match from_auth {
            Some(serde_json::Value::String(mode)) => Some(mode.clone()),
            Some(_) => return Err(Refused::BadRequest),
            None => query_param(query, "acks"),
        };
        match named.as_deref() {
            None | Some("per-event") => Ok(Self::PerEvent),
            Some("cumulative") => Ok(Self::Cumulative),
            Some(_) => Err(Refused::BadRequest),
        }
    }
}

/// Why a connection was refused; its text is the connect_error message clients see.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No valid token.
    #[error("unauthorized")]
    Unauthorized,
    /// Too many new sockets from this address, or too many sockets of this user.
    #[error("rate_limited")]
    RateLimited,
    /// A connect option the server does not know (an unknown `acks` mode).
    #[error("bad_request")]
    BadRequest,
}

/// Connect middleware: in token mode a valid token (`auth.token`, or `?token=` for Engine.IO 3
/// clients) is required; in open mode a token is optional and, when given, must be valid.
/// Connections beyond the address's connect rate or the user's socket limit are refused.
pub async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<serde_json::Value>,
    State(state): State<AppState>,
) -> Result<(), Refused> {
    let parts = socket.req_parts();
    let peer = peer_address(&parts.extensions);
    if let Some(address) = state.limits.proxies.client_address(peer, &parts.headers) {
        if !state.limits.connects.try_take(address) {
            tracing::info!(%address, "connect rate exceeded");
            return Err(Refused::RateLimited);
        }
    }
    let auth = auth.ok();
    let query = socket.req_parts().uri.query();
    match AckMode::requested(auth.as_ref(), query)? {
        AckMode::PerEvent => {}
        mode => {
            socket.extensions.insert(mode);
        }
    }
    let token = auth
        .as_ref()
        .and_then(|a| a.get("token").and_then(|t| t.as_str()).map(str::to_owned))
        .or_else(|| query_param(query, "token"));
    // A token in the connect wins over `guest` (docs/protocol.md, Guests): a user's token
    // makes a user socket whether guests are on or off, and a guest token is checked below.
    // Only a connect that asks to be a new guest depends on guests being on.
    if token.is_none() && wants_guest(auth.as_ref(), query) {
        if !state.settings.guests {
            tracing::debug!("guest socket refused: guests are off");
            return Err(Refused::Unauthorized);
        }
        let uid = UserId::parse(&format!(
            "{}{}",
            crate::accounts::GUEST_UID_PREFIX,
            uuid::Uuid::new_v4()
        ))
        .map_err(|_| Refused::Unauthorized)?;
        tracing::debug!(uid = %uid, "guest socket");
        socket.extensions.insert(Guest);
        socket.extensions.insert(Session {
            uid,
            jti: None,
            expires_at: None,
        });
        return Ok(());
    }
    match (token, state.settings.auth) {
        (Some(token), _) => {
            let verified = state.accounts.verify_with_id(&token).await.map_err(|e| {
                tracing::debug!(error = %e, "socket refused");
                Refused::Unauthorized
            })?;
            let (uid, jti) = (verified.uid, verified.jti);
            if uid.as_str().starts_with(crate::accounts::GUEST_UID_PREFIX) {
                // A guest token (given in the `session` event) resumes that guest: still a
                // guest, whatever the connect asked for, and only while guests are on.
                if !state.settings.guests {
                    return Err(Refused::Unauthorized);
                }
                socket.extensions.insert(Guest);
            }
            check_socket_limit(&state, &uid)?;
            if !state.token_sockets.insert(&jti, socket.clone()) {
                tracing::debug!(uid = %uid, "socket refused: its token was revoked while it connected");
                return Err(Refused::Unauthorized);
            }
            socket.extensions.insert(Session {
                uid,
                jti: Some(jti),
                expires_at: Some(verified.expires_at),
            });
            Ok(())
        }
        (None, AuthMode::Open) => Ok(()),
        (None, AuthMode::Token) => Err(Refused::Unauthorized),
    }
}

/// `rate_limited` when `uid` holds the most sockets a user may on this node.
pub fn check_socket_limit(state: &AppState, uid: &UserId) -> Result<(), Refused> {
    let max = state.settings.max_sockets_per_user;
    if max > 0 && state.router.local_sockets_of(uid.as_str()) >= max {
        tracing::info!(uid = %uid, max, "socket limit per user reached");
        return Err(Refused::RateLimited);
    }
    Ok(())
}

/// The value of `name` in a query string, `%XX` escapes undone.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// Tokens are base64url and a dot, and modes plain words, so only `%XX` escapes need undoing.
fn percent_decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_param_token(query: Option<&str>) -> Option<String> {
        query_param(query, "token")
    }

    #[test]
    fn the_ack_mode_comes_from_auth_or_the_query_and_unknown_ones_are_refused() {
        let mode = |auth: serde_json::Value, query: Option<&str>| {
            AckMode::requested(Some(&auth), query).map_err(|e| e.to_string())
        };
        let none = serde_json::json!({});
        assert_eq!(mode(none.clone(), None), Ok(AckMode::PerEvent));
        assert_eq!(AckMode::requested(None, None).ok(), Some(AckMode::PerEvent));
        assert_eq!(
            mode(serde_json::json!({"acks": "cumulative"}), None),
            Ok(AckMode::Cumulative)
        );
        assert_eq!(
            mode(
                serde_json::json!({"acks": "per-event"}),
                Some("acks=cumulative")
            ),
            Ok(AckMode::PerEvent),
            "auth wins over the query"
        );
        assert_eq!(
            mode(none.clone(), Some("EIO=3&acks=cumulative")),
            Ok(AckMode::Cumulative)
        );
        assert_eq!(
            mode(serde_json::json!({"acks": "sometimes"}), None),
            Err("bad_request".to_owned())
        );
        assert_eq!(
            mode(serde_json::json!({"acks": 1}), None),
            Err("bad_request".to_owned())
        );
        assert_eq!(mode(none, Some("acks=")), Err("bad_request".to_owned()));
    }

    #[test]
    fn a_guest_is_asked_for_by_auth_or_the_query() {
        let auth = |v: serde_json::Value| wants_guest(Some(&v), None);
        assert!(auth(serde_json::json!({"guest": true})));
        assert!(!auth(serde_json::json!({"guest": "yes"})));
        assert!(!auth(serde_json::json!({})));
        assert!(wants_guest(None, Some("EIO=3&guest=1")));
        assert!(wants_guest(None, Some("guest=true")));
        assert!(!wants_guest(None, Some("guest=0")));
        assert!(!wants_guest(None, None));
    }

    #[test]
    fn token_is_read_from_the_query() {
        assert_eq!(
            query_param_token(Some("EIO=3&token=a.b&transport=polling")).as_deref(),
            Some("a.b")
        );
        assert_eq!(
            query_param_token(Some("token=a%2Eb")).as_deref(),
            Some("a.b")
        );
        assert_eq!(query_param_token(Some("EIO=3")), None);
        assert_eq!(query_param_token(None), None);
        assert_eq!(query_param_token(Some("token=%")).as_deref(), Some("%"));
        assert_eq!(query_param_token(Some("token=%4")).as_deref(), Some("%4"));
        assert_eq!(query_param_token(Some("token=%é")).as_deref(), Some("%é"));
    }
}
