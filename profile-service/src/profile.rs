//! The profile record and the rules an update must follow. Everything here is pure: the
//! HTTP layer parses into these types, the stores persist them.

use serde::{Deserialize, Serialize};
use webchat_core::{ids::UserId, text::has_bidi_controls};

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest status line, in characters.
pub const MAX_STATUS_CHARS: usize = 140;
/// Longest avatar URL, in bytes (URLs are ASCII in practice; bytes are the safe bound).
pub const MAX_AVATAR_URL_LEN: usize = 512;

/// A profile as every client and the `wc:profiles` channel see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The user.
    pub uid: String,
    /// Display name, 1–64 characters.
    pub name: String,
    /// Status line, at most 140 characters (may be empty).
    pub status: String,
    /// Empty, or an http(s) URL of at most 512 bytes.
    #[serde(rename = "avatarUrl")]
    pub avatar_url: String,
    /// Time of the last update, unix milliseconds.
    #[serde(rename = "updatedAt")]
    pub updated_at: i64,
}

/// A profile with its store version: a counter the store raises atomically on every write.
/// Never sent to clients; the cache uses it to refuse stale fills (see `cache.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The profile.
    #[serde(flatten)]
    pub profile: Profile,
    /// Strictly increasing per uid, starting at 1.
    #[serde(rename = "ver")]
    pub version: u64,
}

/// What a write changes. `None` keeps the stored value (an empty string for a new profile):
/// the legacy `/add` route only sets the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// New display name (always set).
    pub name: String,
    /// New status, or keep.
    pub status: Option<String>,
    /// New avatar URL, or keep.
    pub avatar_url: Option<String>,
}

/// Why an update is refused; every variant answers `400 bad_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProfile {
    /// Name empty or too long.
    #[error("name must be 1-{MAX_NAME_CHARS} characters")]
    Name,
    /// Name with a bidirectional formatting character (it would display reversed).
    #[error("name must not contain bidirectional formatting characters")]
    NameBidi,
    /// Status too long.
    #[error("status must be at most {MAX_STATUS_CHARS} characters")]
    Status,
    /// Avatar URL too long or not http(s).
    #[error(
        "avatarUrl must be empty or an http(s) URL of at most {MAX_AVATAR_URL_LEN} characters"
    )]
    AvatarUrl,
}

/// The body of `PUT /api/v1/profiles/{uid}`. `status` and `avatarUrl` default to empty, as
/// a PUT replaces the whole profile.
#[derive(Debug, Clone, Deserialize)]
pub struct UpdateBody {
    /// Display name.
    pub name: String,
    /// Status line.
    #[serde(default)]
    pub status: String,
    /// Avatar URL.
    #[serde(default, rename = "avatarUrl")]
    pub avatar_url: String,
}

impl UpdateBody {
    /// Checks every field and turns the body into a full replacement.
    pub fn validate(self) -> Result<Change, InvalidProfile> {
        check_name(&self.name)?;
        if self.status.chars().count() > MAX_STATUS_CHARS {
            return Err(InvalidProfile::Status);
        }
        check_avatar_url(&self.avatar_url)?;
        Ok(Change {
            name: self.name,
            status: Some(self.status),
            avatar_url: Some(self.avatar_url),
        })
    }
}

/// A name counts characters (Unicode scalar values), as the chat server's signup does, so any
/// name signup accepted (non-empty) is accepted here too.
pub fn check_name(name: &str) -> Result<(), InvalidProfile> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(InvalidProfile::Name);
    }
    if has_bidi_controls(name) {
        return Err(InvalidProfile::NameBidi);
    }
    Ok(())
}

/// Empty, or `http://` / `https://` followed by a non-empty host, with no whitespace or
/// control characters (they would let a URL break out of an HTML attribute or a log line).
pub fn check_avatar_url(url: &str) -> Result<(), InvalidProfile> {
    if url.is_empty() {
        return Ok(());
    }
    if url.len() > MAX_AVATAR_URL_LEN || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidProfile::AvatarUrl);
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or(InvalidProfile::AvatarUrl)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Drop any userinfo and port; what is left must be a host.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if host_port.starts_with('[') {
        host_port
            .split_once(']')
            .map(|(h, _)| h.trim_start_matches('['))
            .unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        return Err(InvalidProfile::AvatarUrl);
    }
    Ok(())
}

/// Parses the `ids` of a batch read: 1–100 comma-separated valid uids, duplicates folded.
pub fn parse_id_list(raw: &str, max: usize) -> Result<Vec<UserId>, String> {
    // Count before parsing: the bound protects the back-end, so it applies to what was sent.
    if raw.split(',').count() > max {
        return Err(format!("ids: at most {max} ids per request"));
    }
    let mut ids: Vec<UserId> = Vec::new();
    for part in raw.split(',') {
        let uid = UserId::parse(part.trim()).map_err(|e| format!("ids: {}", e.message))?;
        if !ids.contains(&uid) {
            ids.push(uid);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(name: &str, status: &str, url: &str) -> UpdateBody {
        UpdateBody {
            name: name.into(),
            status: status.into(),
            avatar_url: url.into(),
        }
    }

    #[test]
    fn names_are_1_to_64_characters() {
        assert!(check_name("a").is_ok());
        assert!(check_name(&"é".repeat(64)).is_ok(), "characters, not bytes");
        assert_eq!(check_name(""), Err(InvalidProfile::Name));
        assert_eq!(check_name(&"x".repeat(65)), Err(InvalidProfile::Name));
        assert_eq!(check_name("\u{202E}nimda"), Err(InvalidProfile::NameBidi));
    }

    #[test]
    fn status_is_at_most_140_characters() {
        assert!(body("a", &"ü".repeat(140), "").validate().is_ok());
        assert!(body("a", "", "").validate().is_ok());
        assert_eq!(
            body("a", &"s".repeat(141), "").validate(),
            Err(InvalidProfile::Status)
        );
    }

    #[test]
    fn avatar_urls_must_be_http_or_https() {
        for ok in [
            "",
            "http://example.com",
            "https://example.com/a.png?x=1#f",
            "HTTPS://Example.COM:8443/a",
            "https://[::1]:8080/x",
            "https://user@host/p",
        ] {
            assert!(check_avatar_url(ok).is_ok(), "{ok}");
        }
        let too_long = format!("https://e.com/{}", "a".repeat(MAX_AVATAR_URL_LEN));
        for bad in [
            "javascript:alert(1)",
            "ftp://example.com/a",
            "https://",
            "http:///path",
            "https://exa mple.com",
            "https://e.com/\n",
            "example.com/a.png",
            "data:image/png;base64,AAAA",
            too_long.as_str(),
        ] {
            assert_eq!(
                check_avatar_url(bad),
                Err(InvalidProfile::AvatarUrl),
                "{bad}"
            );
        }
        let at_limit = format!("https://e.com/{}", "a".repeat(MAX_AVATAR_URL_LEN - 14));
        assert_eq!(at_limit.len(), MAX_AVATAR_URL_LEN);
        assert!(check_avatar_url(&at_limit).is_ok());
    }

    #[test]
    fn a_valid_body_replaces_every_field() {
        let change = body("Alice", "hi", "https://a.example/x.png")
            .validate()
            .expect("valid");
        assert_eq!(change.status.as_deref(), Some("hi"));
        assert_eq!(
            change.avatar_url.as_deref(),
            Some("https://a.example/x.png")
        );
    }

    #[test]
    fn missing_optional_fields_default_to_empty() {
        let body: UpdateBody = serde_json::from_str(r#"{"name":"A"}"#).expect("parses");
        assert_eq!(body.status, "");
        assert_eq!(body.avatar_url, "");
    }

    #[test]
    fn id_lists_are_bounded_and_checked() {
        let ids = parse_id_list("a,b,a, c", 100).expect("valid");
        let names: Vec<&str> = ids.iter().map(UserId::as_str).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(parse_id_list("", 100).is_err());
        assert!(parse_id_list("a,,b", 100).is_err());
        assert!(parse_id_list("group_x", 100).is_err());
        let hundred: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
        assert_eq!(
            parse_id_list(&hundred.join(","), 100).map(|v| v.len()),
            Ok(100)
        );
        let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
        assert!(parse_id_list(&many.join(","), 100).is_err());
    }

    #[test]
    fn profile_json_has_the_contract_shape() {
        let p = Profile {
            uid: "a".into(),
            name: "A".into(),
            status: "".into(),
            avatar_url: "".into(),
            updated_at: 5,
        };
        let v = serde_json::to_value(&p).expect("serialises");
        assert_eq!(
            v,
            serde_json::json!({"uid":"a","name":"A","status":"","avatarUrl":"","updatedAt":5})
        );
    }
}
