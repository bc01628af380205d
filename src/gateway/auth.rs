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
    let token = auth
        .ok()
        .and_then(|a| a.get("token").and_then(|t| t.as_str()).map(str::to_owned))
        .or_else(|| query_token(socket.req_parts().uri.query()));
    match (token, state.settings.auth) {
        (Some(token), _) => {
            let (uid, jti) = state.accounts.verify_with_id(&token).await.map_err(|e| {
                tracing::debug!(error = %e, "socket refused");
                Refused::Unauthorized
            })?;
            check_socket_limit(&state, &uid)?;
            if !state.token_sockets.insert(&jti, socket.clone()) {
                tracing::debug!(uid = %uid, "socket refused: its token was revoked while it connected");
                return Err(Refused::Unauthorized);
            }
            socket.extensions.insert(Session {
                uid,
                jti: Some(jti),
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

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| percent_decode(v))
}

/// Tokens are base64url and a dot, so only `%XX` escapes need undoing.
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

    #[test]
    fn token_is_read_from_the_query() {
        assert_eq!(
            query_token(Some("EIO=3&token=a.b&transport=polling")).as_deref(),
            Some("a.b")
        );
        assert_eq!(query_token(Some("token=a%2Eb")).as_deref(), Some("a.b"));
        assert_eq!(query_token(Some("EIO=3")), None);
        assert_eq!(query_token(None), None);
        assert_eq!(query_token(Some("token=%")).as_deref(), Some("%"));
        assert_eq!(query_token(Some("token=%4")).as_deref(), Some("%4"));
        assert_eq!(query_token(Some("token=%é")).as_deref(), Some("%é"));
    }
}
