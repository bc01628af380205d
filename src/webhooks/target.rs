//! The target guard: which URLs the server may call (webhook endpoints, and the push
//! endpoints users choose for themselves), so it cannot be aimed at its own network (SSRF).
//!
//! Owns the URL and address rules and the HTTP client that enforces them on every call: the
//! client resolves names itself and connects only to the addresses it checked (a name that
//! resolves to a private address at call time is refused however it resolved at
//! registration), never goes through a proxy, and follows no redirects (a 3xx is a failed
//! call, retried like any other). Does not own what is sent.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    Url,
};

/// Longest URL accepted as a target.
pub const MAX_URL_BYTES: usize = 2048;

/// Why a target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute URL, or too long.
    #[error("not a valid absolute URL")]
    Invalid,
    /// Not https (http only when private targets are allowed).
    #[error("only https targets are allowed")]
    Scheme,
    /// A URL with a user name or password (they would leak into logs and headers).
    #[error("a target URL may not carry credentials")]
    Credentials,
    /// The address (given, or resolved from the name) is not a public one.
    #[error("the target address {0} is not a public address")]
    Private(IpAddr),
    /// The name did not resolve to any address.
    #[error("the target host does not resolve")]
    Unresolved,
}

/// The rules: public https targets only, unless private ones are allowed
/// (`WEBCHAT_WEBHOOK_ALLOW_PRIVATE`, for development and tests).
#[derive(Debug, Clone, Copy)]
pub struct TargetPolicy {
    /// Allow http and loopback, private, link-local (and other non-public) addresses.
    pub allow_private: bool,
}

impl TargetPolicy {
    /// Parses `raw` and checks its scheme and, when the host is an address, the address.
    /// A host name is checked when it is resolved ([`TargetPolicy::check_resolved`], and on
    /// every call by [`TargetPolicy::client`]).
    pub fn check_url(&self, raw: &str) -> Result<Url, TargetError> {
        let raw = raw.trim();
        if raw.len() > MAX_URL_BYTES {
            return Err(TargetError::Invalid);
        }
        let url = Url::parse(raw).map_err(|_| TargetError::Invalid)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            "http" => return Err(TargetError::Scheme),
            _ => return Err(TargetError::Invalid),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Credentials);
        }
        let host = url.host_str().ok_or(TargetError::Invalid)?;
        if host.is_empty() {
            return Err(TargetError::Invalid);
        }
        if let Some(ip) = literal_ip(host) {
            self.check_ip(ip)?;
        }
        Ok(url)
    }

    /// [`TargetPolicy::check_url`], then the host's name resolved now: refused when none of
    /// its addresses is allowed (a registration is refused at once rather than fail forever).
    pub async fn check_resolved(&self, raw: &str) -> Result<Url, TargetError> {
        let url = self.check_url(raw)?;
        let host = url.host_str().ok_or(TargetError::Invalid)?;
        if literal_ip(host).is_none() {
            allowed_addresses(*self, host).await?;
        }
        Ok(url)
    }

    /// Whether the server may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), TargetError> {
        if self.allow_private || is_public(ip) {
            Ok(())
        } else {
            Err(TargetError::Private(ip))
        }
    }

    /// The HTTP client for calls to checked targets: resolves through the guard, no proxy,
    /// no redirects, bounded in time.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver { policy: *self }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .user_agent(concat!("webchat/", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

/// `host` as an address, if it is one (`[::1]` as URLs write IPv6 hosts, or dotted IPv4).
fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The addresses `host` resolves to that the policy allows; an error when there are none.
async fn allowed_addresses(
    policy: TargetPolicy,
    host: &str,
) -> Result<Vec<SocketAddr>, TargetError> {
    let resolved = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|_| TargetError::Unresolved)?;
    let mut refused = None;
    let mut allowed = Vec::new();
    for address in resolved {
        match policy.check_ip(address.ip()) {
            Ok(()) => allowed.push(address),
            Err(e) => refused = Some(e),
        }
    }
    if allowed.is_empty() {
        return Err(refused.unwrap_or(TargetError::Unresolved));
    }
    Ok(allowed)
}

/// reqwest's resolver for checked targets: the connection goes only to addresses the
/// policy allows, so a name cannot be re-pointed at a private address between check and call
/// (DNS rebinding).
struct GuardedResolver {
    policy: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            match allowed_addresses(policy, name.as_str()).await {
                Ok(allowed) => {
                    let addrs: Addrs = Box::new(allowed.into_iter());
                    Ok(addrs)
                }
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// Whether `ip` is a public unicast address: not loopback, private, link-local, CGNAT,
/// unique-local, multicast, unspecified, documentation, benchmarking or reserved, and not an
/// IPv4 address wrapped in IPv6 (mapped, compatible, 6to4, NAT64, Teredo), which could reach
/// an internal IPv4 address through a gateway.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254) // link-local
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    // ::ffff:0:0/96 (mapped) and ::/96 (compatible): IPv4 in disguise.
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        return false;
    }
    !((s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] == 0x64 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 and 64:ff9b:1::/48
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[0] == 0x2002 // 6to4
        || (s[0] & 0xe000) != 0x2000) // outside global unicast 2000::/3
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy {
        allow_private: false,
    };
    const OPEN: TargetPolicy = TargetPolicy {
        allow_private: true,
    };

    #[test]
    fn private_loopback_and_disguised_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            assert!(!is_public(ip), "{ip} must not be public");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2606:4700::1111"] {
            let ip: IpAddr = ip.parse().expect("address");
            assert!(is_public(ip), "{ip} is public");
        }
    }

    #[test]
    fn only_public_https_passes_unless_private_targets_are_allowed() {
        assert!(STRICT.check_url("https://example.com/hook").is_ok());
        assert_eq!(
            STRICT.check_url("http://example.com/hook"),
            Err(TargetError::Scheme)
        );
        assert!(matches!(
            STRICT.check_url("https://127.0.0.1/hook"),
            Err(TargetError::Private(_))
        ));
        // The URL parser normalises other spellings of loopback before the check.
        assert!(matches!(
            STRICT.check_url("https://0x7f.1/hook"),
            Err(TargetError::Private(_))
        ));
        assert!(matches!(
            STRICT.check_url("https://[::1]:8443/hook"),
            Err(TargetError::Private(_))
        ));
        assert_eq!(
            STRICT.check_url("https://user:pw@example.com/"),
            Err(TargetError::Credentials)
        );
        for bad in [
            "",
            "not a url",
            "ftp://example.com/",
            "/relative",
            "file:///etc/passwd",
        ] {
            assert!(STRICT.check_url(bad).is_err(), "{bad:?}");
        }
        assert!(OPEN.check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(OPEN.check_url("ftp://127.0.0.1/").is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused() {
        assert!(matches!(
            STRICT.check_resolved("https://localhost/hook").await,
            Err(TargetError::Private(_))
        ));
        assert!(OPEN.check_resolved("http://localhost/hook").await.is_ok());
    }
}
