//! `/api/v1/attachments` (contract §12): upload, download, thumbnail. The handlers only
//! translate HTTP to the [`AttachmentService`](crate::attachments::AttachmentService) and
//! back: headers in (`Content-Length`, `Range`), headers out (type, disposition, ranges).

use std::collections::HashMap;

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{error::ApiError, extractor::AuthUser};
use crate::{
    attachments::{AttachmentError, Download, Part, RangeSpec},
    domain::{ChatError, ErrorCode},
    state::AppState,
};

/// The attachment routes (under `/api/v1`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/attachments", post(upload))
        .route("/attachments/{id}", get(original))
        .route("/attachments/{id}/thumbnail", get(thumbnail))
}

/// An attachment is never a page: if a browser is sent to its URL, it runs nothing.
const ATTACHMENT_CSP: &str =
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox";

impl IntoResponse for AttachmentError {
    fn into_response(self) -> Response {
        let with = |status: StatusCode, code: &str, message: String| {
            (
                status,
                Json(serde_json::json!({ "error": { "code": code, "message": message } })),
            )
                .into_response()
        };
        match self {
            Self::TooLarge { .. } | Self::ImageTooLarge(_) => {
                with(StatusCode::PAYLOAD_TOO_LARGE, "too_large", self.to_string())
            }
            Self::Unsupported(message) => {
                with(StatusCode::UNSUPPORTED_MEDIA_TYPE, "bad_request", message)
            }
            Self::NotFound => with(StatusCode::NOT_FOUND, "not_found", self.to_string()),
            Self::RangeNotSatisfiable { size } => {
                let mut response = with(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "bad_request",
                    self.to_string(),
                );
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                response
            }
            Self::Body(message) => with(StatusCode::BAD_REQUEST, "bad_request", message),
            Self::Chat(e) => ApiError::from(e).into_response(),
        }
    }
}

#[tracing::instrument(skip_all, fields(uid = %user.uid))]
async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AttachmentError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let name = query.get("name").map(String::as_str);
    if name.is_some_and(|n| n.len() > 1024) {
        return Err(ChatError::bad_request("name is at most 1024 bytes").into());
    }
    let record = state
        .attachments
        .upload(&user.uid, name, declared, body.into_data_stream())
        .await?;
    let location = format!("/api/v1/attachments/{}", record.id);
    let mut response = (StatusCode::CREATED, Json(record.view())).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

async fn original(
    state: State<AppState>,
    user: AuthUser,
    id: Path<String>,
    headers: HeaderMap,
) -> Result<Response, AttachmentError> {
    serve(state, user, id, headers, Part::Original).await
}

async fn thumbnail(
    state: State<AppState>,
    user: AuthUser,
    id: Path<String>,
    headers: HeaderMap,
) -> Result<Response, AttachmentError> {
    serve(state, user, id, headers, Part::Thumbnail).await
}

#[tracing::instrument(skip_all, fields(uid = %user.uid, id = %id))]
async fn serve(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    part: Part,
) -> Result<Response, AttachmentError> {
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(RangeSpec::parse);
    let download = state.attachments.open(&user.uid, &id, part, range).await?;
    respond(download)
}

fn respond(download: Download) -> Result<Response, AttachmentError> {
    let Download {
        content_type,
        size,
        range,
        name,
        inline,
        body,
    } = download;
    let (status, length) = match range {
        Some((first, last)) => (StatusCode::PARTIAL_CONTENT, last - first + 1),
        None => (StatusCode::OK, size),
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::CONTENT_DISPOSITION,
            content_disposition(&name, inline),
        )
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, ATTACHMENT_CSP)
        // Private: only this user may read it; a shared cache must not keep it.
        .header(header::CACHE_CONTROL, "private, max-age=3600");
    if let Some((first, last)) = range {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {first}-{last}/{size}"),
        );
    }
    response.body(Body::from_stream(body)).map_err(|e| {
        tracing::error!(error = %e, "attachment response");
        ChatError::new(ErrorCode::Internal, "internal error").into()
    })
}

/// Characters kept as they are in `filename*` (RFC 5987 attr-char).
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `inline` (images) or `attachment` (everything else), with an ASCII `filename` for old
/// clients and the UTF-8 name in `filename*` (RFC 6266). The name was sanitized on upload;
/// the ASCII copy also loses anything outside printable ASCII and any quote or backslash.
pub fn content_disposition(name: &str, inline: bool) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let kind = if inline { "inline" } else { "attachment" };
    format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, ATTR_CHAR)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_quote_nothing_a_header_could_misread() {
        assert_eq!(
            content_disposition("receipt.pdf", false),
            "attachment; filename=\"receipt.pdf\"; filename*=UTF-8''receipt.pdf"
        );
        let header = content_disposition("café \"x\".png", true);
        assert!(
            header.starts_with("inline; filename=\"caf_ _x_.png\";"),
            "{header}"
        );
        assert!(
            header.ends_with("filename*=UTF-8''caf%C3%A9%20%22x%22.png"),
            "{header}"
        );
        assert!(HeaderValue::from_str(&header).is_ok());
    }
}
