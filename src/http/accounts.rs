//! `POST /signup`, `/login`, `/logout`.

use axum::{extract::State, http::StatusCode, routing::post, Json, Router};
use serde::Deserialize;

use super::{
    error::ApiError,
    extractor::{ApiJson, AuthUser},
};
use crate::{
    accounts::{IssuedToken, SignupError},
    domain::UserId,
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
    ApiJson(req): ApiJson<SignupRequest>,
) -> Result<(StatusCode, Json<IssuedToken>), ApiError> {
    let uid = UserId::parse(&req.uid)?;
    match state.accounts.signup(&uid, &req.password, &req.name).await {
        Ok(issued) => {
            if let Some(profiles) = &state.settings.profile_url {
                crate::profiles::create_profile(profiles, &uid, &req.name, &issued.token).await;
            }
            Ok((StatusCode::CREATED, Json(issued)))
        }
        Err(SignupError::Taken) => Err(ApiError::Conflict(format!("uid {uid} is taken"))),
        Err(SignupError::Refused(e)) => Err(e.into()),
    }
}

async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<IssuedToken>, ApiError> {
    // An unparseable uid cannot have an account: same answer as a wrong password.
    let uid = UserId::parse(&req.uid).map_err(|_| {
        crate::domain::ChatError::new(
            crate::domain::ErrorCode::Unauthorized,
            "wrong uid or password",
        )
    })?;
    Ok(Json(state.accounts.login(&uid, &req.password).await?))
}

async fn logout(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, ApiError> {
    state.accounts.logout(&user.token).await?;
    tracing::info!(uid = %user.uid, "logged out");
    Ok(StatusCode::NO_CONTENT)
}
