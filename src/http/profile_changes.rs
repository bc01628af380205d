//! `POST /api/v1/me/profile-changed`: the signed-in user saved their profile in the profile
//! service; the chat server reads it from there and shares it with the user's contacts as a
//! `profile` event. Needed where the profile service publishes nothing (no Redis); a no-op
//! where it does.

use axum::{extract::State, http::StatusCode, routing::post, Router};

use super::{error::ApiError, extractor::AuthUser};
use crate::{
    domain::{ChatError, ErrorCode},
    profiles::RefreshError,
    state::AppState,
};

/// The route (under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new().route("/me/profile-changed", post(profile_changed))
}

async fn profile_changed(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<StatusCode, ApiError> {
    match state.profiles.refresh(&user.uid).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(RefreshError::Busy) => {
            Err(ChatError::new(ErrorCode::RateLimited, RefreshError::Busy.to_string()).into())
        }
        Err(RefreshError::NoProfile) => {
            Err(ChatError::new(ErrorCode::NotFound, RefreshError::NoProfile.to_string()).into())
        }
        Err(RefreshError::Unreachable(why)) => {
            tracing::warn!(uid = %user.uid, error = %why, "profile change not shared");
            Err(ChatError::new(
                ErrorCode::Unavailable,
                "the profile service cannot be reached; contacts see the change later",
            )
            .into())
        }
        Err(RefreshError::Store(e)) => Err(ChatError::from(e).into()),
    }
}
