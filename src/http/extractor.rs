//! Extractors: the authenticated user from a bearer token, and JSON bodies whose rejections
//! use the API's error shape.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{rejection::JsonRejection, ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{header::AUTHORIZATION, request::Parts},
};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::{
    domain::{ChatError, ErrorCode, UserId},
    state::AppState,
};

/// The user behind `Authorization: Bearer <token>`, with the token itself.
pub struct AuthUser {
    /// Who.
    pub uid: UserId,
    /// The presented token (logout revokes it).
    pub token: String,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)
            .ok_or_else(|| ChatError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
        let uid = state.accounts.verify(&token).await?;
        if uid.as_str().starts_with(crate::accounts::GUEST_UID_PREFIX) {
            // A guest's token (§9, §10) opens its socket and its tickets' history, nothing
            // else: it is not an account.
            return Err(ChatError::new(
                ErrorCode::Forbidden,
                "guests may only read their own support tickets",
            )
            .into());
        }
        Ok(Self { uid, token })
    }
}

/// [`AuthUser`], or a guest with its guest token: for the routes a guest may use (the
/// history of a conversation it takes part in, which is only ever its own tickets).
pub struct UserOrGuest {
    /// Who.
    pub uid: UserId,
}

impl FromRequestParts<AppState> for UserOrGuest {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)
            .ok_or_else(|| ChatError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
        let uid = state.accounts.verify(&token).await?;
        Ok(Self { uid })
    }
}

fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_owned())
}

/// The client's address, when known: the TCP peer, or behind a trusted proxy the address
/// that proxy saw (see [`TrustedProxies`]).
pub struct ClientAddress(pub Option<IpAddr>);

/// The TCP peer's address recorded by the server's connect info.
pub fn peer_address(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip().to_canonical())
}

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = peer_address(&parts.extensions);
        Ok(Self(
            state.limits.proxies.client_address(peer, &parts.headers),
        ))
    }
}

/// `Json<T>` whose failures answer `400 bad_request` in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ChatError::bad_request(rejection_text(&rejection)).into()),
        }
    }
}

fn rejection_text(rejection: &JsonRejection) -> String {
    format!("invalid JSON body: {}", rejection.body_text())
}
