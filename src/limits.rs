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
use fred::{clients::Pool, interfaces::KeysInterface, types::scripts::Script};

use crate::storage::{redis::unavailable, StoreError};

/// Store reads one command runs at once when it checks many users (a group create naming
/// thousands of members): enough to overlap round trips, few enough that one command neither
/// floods the store nor, on the embedded store, the blocking thread pool.
pub const STORE_READS_PER_COMMAND: usize = 32;

/// Runs `checks` (one per user a command names) [`STORE_READS_PER_COMMAND`] at a time, in
/// order, and returns the first refusal in that order; once one is refused no later check
/// starts. The checks are made by the caller up front (an async fn does nothing until
/// polled): a closure in the stream's type trips the compiler's proof that a socket
/// handler's future is `Send`.
pub async fn first_refusal<F, E>(checks: Vec<F>) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    use futures_util::{StreamExt, TryStreamExt};
    futures_util::stream::iter(checks)
        .buffered(STORE_READS_PER_COMMAND)
        .try_for_each(|()| async { Ok(()) })
        .await
}

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
        self.take_at(now).is_ok()
    }

    /// Takes one token, or says how long until there is one.
    fn take_at(&self, now: Instant) -> Result<(), Duration> {
        let Ok(mut state) = self.state.lock() else {
            return Ok(()); // a poisoned lock must not lock a user out
        };
        let (tokens, last) = *state;
        let refilled = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.per_sec)
            .min(self.burst);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            Ok(())
        } else {
            *state = (refilled, now);
            let wait = if self.per_sec > 0.0 {
                (1.0 - refilled) / self.per_sec
            } else {
                f64::from(u32::MAX)
            };
            Err(Duration::try_from_secs_f64(wait).unwrap_or(Duration::MAX))
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
        self.take(key).is_ok()
    }

    /// Takes a token from `key`'s bucket, or says how long until it has one.
    pub fn take(&self, key: IpAddr) -> Result<(), Duration> {
        if self.per_sec <= 0.0 {
            return Ok(());
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
        entry.0.take_at(now)
    }
}

/// Where login attempts are counted.
enum Counter {
    /// Shared by every node.
    Redis {
        pool: Pool,
        reserve: Script,
        release: Script,
    },
    /// This node only (no Redis): key → (attempts, window end).
    Memory(DashMap<String, (u32, Instant)>),
}

/// Counts a login attempt: INCR, the window starting at the first attempt (INCR keeps the
/// expiry, so later attempts neither reset the count nor extend the window). A key without an
/// expiry (left by the old SET NX + INCR, whose INCR could recreate an expired key) gets one.
/// Returns {count, seconds left in the window}.
const RESERVE_LUA: &str = r#"
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"#;

/// Gives back an attempt whose password was never checked. DECR only an existing key: on an
/// expired one it would create a key without expiry.
const RELEASE_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('DECR', KEYS[1])
end
return 0
"#;

/// Why a login attempt may not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Over a limit: answer `rate_limited`, retry after the window ends.
    #[error("{message}")]
    Limited {
        /// Safe to show the client.
        message: &'static str,
        /// Until the window ends (at least a second).
        retry_after: Duration,
    },
    /// The counter's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Refuses logins for a uid, or from an address, after too many recent attempts that failed.
///
/// An attempt is counted (reserved) before its password is checked, atomically in Redis when
/// the node has it (so every node sees the same count) and in this process otherwise. With a
/// limit of 10, at most 10 passwords of a uid are checked within the window however many
/// attempts arrive at once: the rest are refused without hashing. A success clears the uid's
/// count and gives back its address's reservation; an attempt whose password was never
/// checked (hashing capacity spent, store failure) gives both back.
pub struct LoginThrottle {
    counter: Counter,
    max_per_uid: u32,
    max_per_address: u32,
    window: Duration,
}

/// The counter keys of one reserved attempt (give them back with
/// [`LoginThrottle::succeeded`] or [`LoginThrottle::release`]).
#[derive(Debug)]
pub struct Reservation {
    by_uid: Option<String>,
    by_address: Option<String>,
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
            Some(pool) => Counter::Redis {
                pool,
                reserve: Script::from_lua(RESERVE_LUA),
                release: Script::from_lua(RELEASE_LUA),
            },
            None => Counter::Memory(DashMap::new()),
        };
        Self {
            counter,
            max_per_uid,
            max_per_address,
            window: window.max(Duration::from_secs(1)),
        }
    }

    fn uid_key(uid: &str) -> String {
        format!("wc:{{{uid}}}:login_failures")
    }

    fn address_key(address: IpAddr) -> String {
        format!("wc:{{ip:{address}}}:login_failures")
    }

    /// Counts an attempt for `uid` (none: an unparseable uid, counted against the address
    /// only) from `address`, before its password is checked; refused when either count would
    /// pass its limit.
    pub async fn reserve(
        &self,
        uid: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<Reservation, Refusal> {
        let mut reservation = Reservation {
            by_uid: None,
            by_address: None,
        };
        if let Some(uid) = uid.filter(|_| self.max_per_uid > 0) {
            let key = Self::uid_key(uid);
            let (count, left) = self.incr(&key).await?;
            if count > self.max_per_uid {
                // Left counted: the window does not move, and a success clears it.
                return Err(limited(
                    "too many failed logins for this uid; try again later",
                    left,
                ));
            }
            reservation.by_uid = Some(key);
        }
        if let Some(address) = address.filter(|_| self.max_per_address > 0) {
            let key = Self::address_key(address);
            let (count, left) = self.incr(&key).await?;
            reservation.by_address = Some(key);
            if count > self.max_per_address {
                // The uid's attempt was never made: give it back (the address's stays, like
                // the uid's above).
                reservation.by_address = None;
                self.release(reservation).await?;
                return Err(limited(
                    "too many failed logins from this address; try again later",
                    left,
                ));
            }
        }
        Ok(reservation)
    }

    /// A successful login clears the uid's count and gives back the address's reservation
    /// (successes do not count against an address).
    pub async fn succeeded(&self, reservation: Reservation) -> Result<(), StoreError> {
        if let Some(key) = &reservation.by_uid {
            match &self.counter {
                Counter::Redis { pool, .. } => {
                    let _: i64 = pool.del(key.as_str()).await.map_err(unavailable)?;
                }
                Counter::Memory(map) => {
                    map.remove(key);
                }
            }
        }
        if let Some(key) = &reservation.by_address {
            self.decr(key).await?;
        }
        Ok(())
    }

    /// Gives back an attempt whose password was never checked.
    pub async fn release(&self, reservation: Reservation) -> Result<(), StoreError> {
        for key in [&reservation.by_uid, &reservation.by_address]
            .into_iter()
            .flatten()
        {
            self.decr(key).await?;
        }
        Ok(())
    }

    /// Adds one to `key`; returns the new count and the time left in its window.
    async fn incr(&self, key: &str) -> Result<(u32, Duration), StoreError> {
        let window_secs = i64::try_from(self.window.as_secs()).unwrap_or(i64::MAX);
        match &self.counter {
            Counter::Redis { pool, reserve, .. } => {
                let (count, ttl): (i64, i64) = reserve
                    .evalsha_with_reload(pool.next(), vec![key.to_owned()], vec![window_secs])
                    .await
                    .map_err(unavailable)?;
                Ok((
                    u32::try_from(count).unwrap_or(u32::MAX),
                    Duration::from_secs(u64::try_from(ttl).unwrap_or(1)),
                ))
            }
            Counter::Memory(map) => {
                let now = Instant::now();
                // The entry holds the shard's lock: read, reset and add are one step.
                let mut entry = map.entry(key.to_owned()).or_insert((0, now + self.window));
                if entry.1 <= now {
                    *entry = (0, now + self.window);
                }
                entry.0 = entry.0.saturating_add(1);
                Ok((entry.0, entry.1.saturating_duration_since(now)))
            }
        }
    }

    async fn decr(&self, key: &str) -> Result<(), StoreError> {
        match &self.counter {
            Counter::Redis { pool, release, .. } => {
                let _: i64 = release
                    .evalsha_with_reload(pool.next(), vec![key.to_owned()], Vec::<String>::new())
                    .await
                    .map_err(unavailable)?;
            }
            Counter::Memory(map) => {
                if let Some(mut entry) = map.get_mut(key) {
                    entry.0 = entry.0.saturating_sub(1);
                }
            }
        }
        Ok(())
    }
}

fn limited(message: &'static str, left: Duration) -> Refusal {
    Refusal::Limited {
        message,
        retry_after: left.max(Duration::from_secs(1)),
    }
}

/// Whole seconds for a `Retry-After` header: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs();
    let secs = if wait.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    };
    secs.max(1)
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
    async fn attempts_are_counted_before_the_check_and_a_success_clears_the_uid() {
        let throttle = LoginThrottle::new(None, 3, 5, Duration::from_secs(60));
        let ip: IpAddr = [10, 0, 0, 1].into();
        // Three reservations in a row (as parallel attempts would make them, none finished).
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(
                throttle
                    .reserve(Some("ann"), Some(ip))
                    .await
                    .expect("under the limit"),
            );
        }
        // An attempt that checked nothing gives its place back.
        throttle
            .release(held.pop().expect("one"))
            .await
            .expect("release");
        let again = throttle
            .reserve(Some("ann"), Some(ip))
            .await
            .expect("a place was given back");
        let refused = throttle
            .reserve(Some("ann"), Some(ip))
            .await
            .expect_err("over");
        assert!(
            matches!(refused, Refusal::Limited { retry_after, .. }
                if retry_after > Duration::from_secs(58) && retry_after <= Duration::from_secs(60)),
            "{refused:?}"
        );
        // A success clears the uid (refused attempts included).
        throttle.succeeded(again).await.expect("clear");
        throttle
            .reserve(Some("ann"), Some(ip))
            .await
            .expect("cleared");
        // The address has 3 counted (2 held, the last; the refused one never reached it and
        // the success gave its place back): two more fit, unparseable uids count too...
        throttle.reserve(None, Some(ip)).await.expect("4th");
        throttle.reserve(None, Some(ip)).await.expect("5th");
        // ...then any uid is refused by address.
        let refused = throttle
            .reserve(Some("cid"), Some(ip))
            .await
            .expect_err("address over");
        assert!(matches!(refused, Refusal::Limited { .. }));
        // The uid's place was given back when the address refused.
        throttle
            .reserve(Some("cid"), None)
            .await
            .expect("no address, no address limit");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(900)), 900);
    }

    #[test]
    fn a_keyed_bucket_says_how_long_until_its_next_token() {
        let buckets = KeyedBuckets::new(0.5, 1.0);
        let a: IpAddr = [127, 0, 0, 1].into();
        assert!(buckets.take(a).is_ok());
        let wait = buckets.take(a).expect_err("empty");
        assert!(wait > Duration::from_millis(1_900) && wait <= Duration::from_secs(2));
    }
}
