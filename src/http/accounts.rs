//! `POST /signup`, `/login`, `/logout`.

use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use serde::Deserialize;

use super::{
    error::ApiError,
    extractor::{ApiJson, AuthUser, ClientAddress},
};
use crate::{
    accounts::{IssuedToken, LoginError, SignupError},
    domain::{ChatError, ErrorCode, UserId},
    limits::{LoginThrottle, Reservation},
    state::AppState,
};

/// Account routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", post(signup))
        .route("/login", post(login))
        .route("/logout", post(logout))
}

#[derive(Deserialize)]
struct SignupRequest {
    uid: String,
    password: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct LoginRequest {
    uid: String,
    password: String,
}

async fn signup(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    // Before anything is hashed: a signup costs a hash (~19 MiB for tens of milliseconds).
    if let Some(address) = address {
        if let Err(wait) = state.limits.signups.take(address) {
            tracing::info!(%address, "signup refused: address over the signup rate");
            return Err(ApiError::RetryLater {
                error: ChatError::new(
                    ErrorCode::RateLimited,
                    "too many signups from this address; try again later",
                ),
                after: wait,
            });
        }
    }
    let uid = UserId::parse(&req.uid)?;
    match state.accounts.signup(&uid, &req.password, &req.name).await {
        Ok(issued) => {
            if let Some(profiles) = &state.settings.profile_url {
                crate::profiles::create_profile(profiles, &uid, &req.name, &issued.token).await;
            }
            Ok((StatusCode::CREATED, Json(issued)))
        }
        Err(SignupError::Taken) => Err(ApiError::Conflict(format!("uid {uid} is taken"))),
        Err(SignupError::Busy(busy)) => Err(busy.into()),
        Err(SignupError::Refused(e)) => Err(e.into()),
    }
}

async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<IssuedToken>, ApiError> {
    let throttle = &state.limits.logins;
    // An unparseable uid cannot have an account: same answer as a wrong password (and it
    // counts against the address only, never as a key of its own).
    let Ok(uid) = UserId::parse(&req.uid) else {
        throttle.reserve(None, address).await?;
        return Err(wrong_credentials().into());
    };
    // Counted before the check, so parallel attempts cannot all slip under the limit.
    let reservation = throttle.reserve(Some(uid.as_str()), address).await?;
    match state.accounts.login(&uid, &req.password).await {
        Ok(issued) => {
            throttle
                .succeeded(reservation)
                .await
                .map_err(ChatError::from)?;
            Ok(Json(issued))
        }
        Err(LoginError::Wrong) => {
            // Already counted by the reservation.
            tracing::info!(uid = %uid, ?address, "failed login");
            Err(wrong_credentials().into())
        }
        // The password was never checked: the attempt does not count.
        Err(LoginError::Busy(busy)) => {
            release_unchecked(throttle, reservation, &uid).await;
            Err(busy.into())
        }
        Err(LoginError::Refused(e)) => {
            release_unchecked(throttle, reservation, &uid).await;
            Err(e.into())
        }
    }
}

/// Gives back the reservation of an attempt whose password was never checked; a failure only
/// leaves the attempt counted (the window ends it), so it is logged, not answered.
async fn release_unchecked(throttle: &LoginThrottle, reservation: Reservation, uid: &UserId) {
    if let Err(e) = throttle.release(reservation).await {
        tracing::warn!(error = %e, uid = %uid, "login reservation not released");
    }
}

fn wrong_credentials() -> ChatError {
    ChatError::new(ErrorCode::Unauthorized, "wrong uid or password")
}

async fn logout(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, ApiError> {
    let jti = state.accounts.logout(&user.token).await?;
    // The token is refused from now on; its open sockets close on every node too.
    if let Err(e) = state.token_sockets.revoke_everywhere(&jti).await {
        tracing::warn!(error = %e, "open sockets of a revoked token not closed");
    }
    tracing::info!(uid = %user.uid, "logged out");
    Ok(StatusCode::NO_CONTENT)
}
