//! Abuse limits: token buckets for a socket's event rate and an address's connection rate,
//! and the failed-login throttle (per uid and per client address).
//!
//! The login throttle counts in Redis when the node has it, so every node sees the same
//! failures; socket and connection buckets are per node (a client's socket lives on one node,
//! and a load balancer spreads one address's connections over the nodes it has).

use std::{
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::http::HeaderMap;
use dashmap::DashMap;
use fred::{
    clients::Pool,
    interfaces::KeysInterface,
    types::{Expiration, SetOptions},
};

use crate::{
    domain::{ChatError, ErrorCode},
    storage::{redis::unavailable, StoreError},
};

/// A token bucket: `burst` tokens at most, refilled at `per_sec`.
#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_sec: f64, burst: f64) -> Self {
        let burst = burst.max(1.0);
        Self {
            burst,
            per_sec: per_sec.max(0.0),
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return true; // a poisoned lock must not lock a user out
        };
        let (tokens, last) = *state;
        let refilled = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.per_sec)
            .min(self.burst);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            true
        } else {
            *state = (refilled, now);
            false
        }
    }
}

/// Token buckets by key (client address), with idle ones swept away.
pub struct KeyedBuckets {
    per_sec: f64,
    burst: f64,
    buckets: DashMap<IpAddr, (TokenBucket, Instant)>,
}

impl KeyedBuckets {
    /// Buckets of `burst` tokens refilled at `per_sec`; `per_sec` 0 turns the limit off.
    pub fn new(per_sec: f64, burst: f64) -> Self {
        Self {
            per_sec,
            burst,
            buckets: DashMap::new(),
        }
    }

    /// Takes a token from `key`'s bucket.
    pub fn try_take(&self, key: IpAddr) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let now = Instant::now();
        if self.buckets.len() > 100_000 {
            // Buckets idle long enough to be full again carry no information.
            let full_after = Duration::from_secs_f64(self.burst / self.per_sec);
            self.buckets
                .retain(|_, (_, used)| now.saturating_duration_since(*used) < full_after);
        }
        let mut entry = self
            .buckets
            .entry(key)
            .or_insert_with(|| (TokenBucket::new(self.per_sec, self.burst), now));
        entry.1 = now;
        entry.0.try_take_at(now)
    }
}

/// Where failed logins are counted.
enum Counter {
    /// Shared by every node.
    Redis(Pool),
    /// This node only (no Redis): key → (failures, window end).
    Memory(DashMap<String, (u32, Instant)>),
}

/// Refuses logins for a uid, or from an address, after too many recent failures.
pub struct LoginThrottle {
    counter: Counter,
    max_per_uid: u32,
    max_per_address: u32,
    window: Duration,
}

impl LoginThrottle {
    /// Counting in Redis when `pool` is given. `max_*` 0 turns that limit off.
    pub fn new(
        pool: Option<Pool>,
        max_per_uid: u32,
        max_per_address: u32,
        window: Duration,
    ) -> Self {
        let counter = match pool {
            Some(pool) => Counter::Redis(pool),
            None => Counter::Memory(DashMap::new()),
        };
        Self {
            counter,
            max_per_uid,
            max_per_address,
            window: window.max(Duration::from_secs(1)),
        }
    }

    fn keys(uid: &str, address: Option<IpAddr>) -> (String, Option<String>) {
        (
            format!("wc:{{{uid}}}:login_failures"),
            address.map(|a| format!("wc:{{ip:{a}}}:login_failures")),
        )
    }

    /// `rate_limited` when either count is at its limit.
    pub async fn check(&self, uid: &str, address: Option<IpAddr>) -> Result<(), ChatError> {
        let (by_uid, by_address) = Self::keys(uid, address);
        let over = |count: u32, max: u32| max > 0 && count >= max;
        if !uid.is_empty() && over(self.count(&by_uid).await?, self.max_per_uid) {
            return Err(throttled(
                "too many failed logins for this uid; try again later",
            ));
        }
        if let Some(key) = by_address {
            if over(self.count(&key).await?, self.max_per_address) {
                return Err(throttled(
                    "too many failed logins from this address; try again later",
                ));
            }
        }
        Ok(())
    }

    /// Counts a failed login.
    pub async fn failed(&self, uid: &str, address: Option<IpAddr>) -> Result<(), StoreError> {
        let (by_uid, by_address) = Self::keys(uid, address);
        self.bump(&by_uid).await?;
        if let Some(key) = by_address {
            self.bump(&key).await?;
        }
        Ok(())
    }

    /// Counts a failed login that named no valid uid.
    pub async fn failed_address(&self, address: Option<IpAddr>) -> Result<(), StoreError> {
        if let (_, Some(key)) = Self::keys("", address) {
            self.bump(&key).await?;
        }
        Ok(())
    }

    /// A successful login clears the uid's count (not the address's).
    pub async fn succeeded(&self, uid: &str) -> Result<(), StoreError> {
        let (by_uid, _) = Self::keys(uid, None);
        match &self.counter {
            Counter::Redis(pool) => {
                let _: i64 = pool.del(by_uid).await.map_err(unavailable)?;
            }
            Counter::Memory(map) => {
                map.remove(&by_uid);
            }
        }
        Ok(())
    }

    async fn count(&self, key: &str) -> Result<u32, StoreError> {
        match &self.counter {
            Counter::Redis(pool) => {
                let count: Option<u32> = pool.get(key).await.map_err(unavailable)?;
                Ok(count.unwrap_or(0))
            }
            Counter::Memory(map) => Ok(map
                .get(key)
                .filter(|entry| entry.1 > Instant::now())
                .map_or(0, |entry| entry.0)),
        }
    }

    async fn bump(&self, key: &str) -> Result<(), StoreError> {
        let window_secs = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        match &self.counter {
            Counter::Redis(pool) => {
                // The window starts at the first failure: the key is created with its expiry
                // (NX: later failures neither reset the count nor extend the window), and INCR
                // keeps the expiry.
                let _: Option<String> = pool
                    .set(
                        key,
                        0,
                        Some(Expiration::EX(window_secs)),
                        Some(SetOptions::NX),
                        false,
                    )
                    .await
                    .map_err(unavailable)?;
                let _: i64 = pool.incr(key).await.map_err(unavailable)?;
            }
            Counter::Memory(map) => {
                let now = Instant::now();
                let mut entry = map.entry(key.to_owned()).or_insert((0, now + self.window));
                if entry.1 <= now {
                    *entry = (0, now + self.window);
                }
                entry.0 += 1;
            }
        }
        Ok(())
    }
}

fn throttled(message: &str) -> ChatError {
    ChatError::new(ErrorCode::RateLimited, message)
}

/// One `X-Forwarded-For` hop: an address, possibly with a port (`1.2.3.4:5678`) or in
/// brackets (`[::1]`, `[::1]:443`), as some proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    let (ip, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Proxies whose `X-Forwarded-For` is believed (`WEBCHAT_TRUSTED_PROXIES`: addresses or CIDR
/// ranges). Behind a load balancer every connection comes from the balancer, so per-address
/// limits (failed logins, new sockets) would count all clients as one; naming the balancer
/// here makes them count the real client. A header from anyone else is ignored, since a
/// client could write any address into it.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses a comma-separated list such as `10.0.0.0/8, 127.0.0.1, ::1`.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (address, bits) = match item.split_once('/') {
                Some((address, bits)) => (address, Some(bits)),
                None => (item, None),
            };
            let ip: IpAddr = address
                .parse()
                .map_err(|_| format!("trusted proxy {item:?} is not an IP address or range"))?;
            let ip = ip.to_canonical();
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(bits) => bits
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("trusted proxy {item:?} has a bad prefix length"))?,
            };
            ranges.push((ip, bits));
        }
        Ok(Self(ranges))
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|(range, bits)| match (range, ip) {
            (IpAddr::V4(range), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                u32::from(*range) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(range), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                u128::from(*range) & mask == u128::from(ip) & mask
            }
            _ => false,
        })
    }

    /// The client's address: `peer`, unless it is a trusted proxy; then the nearest address
    /// in `X-Forwarded-For`, read from the right, that is not itself a trusted proxy (each
    /// proxy appends the address it saw, so everything left of that one is the client's own
    /// claim).
    pub fn client_address(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.to_canonical();
        if !self.contains(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let values: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
        for value in values.into_iter().rev() {
            let Ok(value) = value.to_str() else {
                return Some(client);
            };
            for hop in value.split(',').rev() {
                let Some(hop) = parse_hop(hop) else {
                    // Not an address (`unknown`, garbage): nothing to its left can be
                    // trusted either.
                    return Some(client);
                };
                client = hop;
                if !self.contains(client) {
                    return Some(client);
                }
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1 ,::1").expect("parse");
        // (TCP peer, X-Forwarded-For, the client address counted)
        let cases = [
            // From the balancer: the right-most untrusted hop (6.6.6.6 is the client's claim).
            ("10.1.2.3", "6.6.6.6, 203.0.113.7", "203.0.113.7"),
            ("::ffff:127.0.0.1", "6.6.6.6, 203.0.113.7", "203.0.113.7"),
            // From anyone else the header is ignored.
            ("198.51.100.1", "6.6.6.6, 203.0.113.7", "198.51.100.1"),
            // Trusted hops are skipped; a header of proxies only leaves the last of them.
            ("::1", "203.0.113.7, 10.9.9.9", "203.0.113.7"),
            ("::1", "10.9.9.9", "10.9.9.9"),
            // Ports and brackets, as some proxies write hops.
            ("::1", "203.0.113.7:5678", "203.0.113.7"),
            ("::1", "[2001:db8::7]:443", "2001:db8::7"),
            // Not an address: nothing left of it is believed.
            ("::1", "6.6.6.6, unknown", "::1"),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        for (peer, forwarded, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", forwarded.parse().expect("header"));
            assert_eq!(
                proxies.client_address(ip(peer), &headers),
                ip(expected).map(|a| a.to_canonical()),
                "{peer} / {forwarded}"
            );
            // None configured: always the peer.
            assert_eq!(
                TrustedProxies::default().client_address(ip(peer), &headers),
                ip(peer).map(|a| a.to_canonical())
            );
        }
        for bad in ["10.0.0.0/33", "nonsense", "::1/129"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let bucket = TokenBucket::new(10.0, 3.0);
        let start = Instant::now();
        assert!((0..3).all(|_| bucket.try_take_at(start)));
        assert!(!bucket.try_take_at(start), "burst spent");
        assert!(
            bucket.try_take_at(start + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!bucket.try_take_at(start + Duration::from_millis(150)));
        assert!(
            (0..3).all(|_| bucket.try_take_at(start + Duration::from_secs(60))),
            "refills up to the burst"
        );
        assert!(
            !bucket.try_take_at(start + Duration::from_secs(60)),
            "never above the burst"
        );
    }

    #[test]
    fn keyed_buckets_are_per_address_and_can_be_off() {
        let buckets = KeyedBuckets::new(1.0, 2.0);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        assert!(buckets.try_take(a) && buckets.try_take(a));
        assert!(!buckets.try_take(a));
        assert!(buckets.try_take(b), "another address has its own bucket");
        let off = KeyedBuckets::new(0.0, 1.0);
        assert!((0..100).all(|_| off.try_take(a)));
    }

    #[tokio::test]
    async fn logins_are_refused_after_the_limit_until_a_success_clears_the_uid() {
        let throttle = LoginThrottle::new(None, 3, 5, Duration::from_secs(60));
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            throttle
                .check("ann", Some(ip))
                .await
                .expect("under the limit");
            throttle.failed("ann", Some(ip)).await.expect("count");
        }
        let refused = throttle.check("ann", Some(ip)).await.expect_err("over");
        assert_eq!(refused.code, ErrorCode::RateLimited);
        throttle.succeeded("ann").await.expect("clear");
        throttle.check("ann", Some(ip)).await.expect("cleared");
        for _ in 0..2 {
            throttle.failed("bob", Some(ip)).await.expect("count");
        }
        let refused = throttle
            .check("cid", Some(ip))
            .await
            .expect_err("address over");
        assert_eq!(refused.code, ErrorCode::RateLimited);
        throttle
            .check("cid", None)
            .await
            .expect("no address, no address limit");
    }
}
