//! Sockets between the connect middleware and the connect handler.
//!
//! The middleware subscribes a socket's user and indexes its token before socketioxide adds
//! the socket to the namespace. When the client hangs up in that window, socketioxide drops
//! the socket without running the connect or the disconnect handler, so what the middleware
//! set up would stay forever: the user subscribed and counted online, a place of the user's
//! socket limit taken, the token index holding the socket. This index remembers each socket
//! until a handler runs for it, and hands out those that never connected.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long a socket may stay between its middleware and a handler before it counts as
/// abandoned. socketioxide marks a socket connected right after the middleware returns,
/// with no await in between, so any margin works; a generous one keeps a descheduled
/// thread from ever making a live socket look abandoned.
pub const GRACE: Duration = Duration::from_secs(5);

/// How often a node looks for abandoned sockets.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Sockets (`T`) by id whose middleware succeeded, until a handler takes them over.
pub struct Connecting<T> {
    sockets: Mutex<HashMap<String, (Instant, T)>>,
}

impl<T> Default for Connecting<T> {
    fn default() -> Self {
        Self {
            sockets: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Connecting<T> {
    /// Notes that the middleware set up socket `id` at `now`.
    pub fn insert(&self, id: &str, socket: T, now: Instant) {
        self.lock().insert(id.to_owned(), (now, socket));
    }

    /// A handler took socket `id` over (connect or disconnect).
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Sockets set up more than [`GRACE`] before `now`: those that never `connected` are
    /// returned for release; the others are forgotten, their connect handler owns them.
    pub fn take_abandoned(&self, now: Instant, connected: impl Fn(&T) -> bool) -> Vec<T> {
        let mut sockets = self.lock();
        let old: Vec<String> = sockets
            .iter()
            .filter(|(_, (since, _))| now.saturating_duration_since(*since) > GRACE)
            .map(|(id, _)| id.clone())
            .collect();
        old.into_iter()
            .filter_map(|id| sockets.remove(&id))
            .map(|(_, socket)| socket)
            .filter(|socket| !connected(socket))
            .collect()
    }

    /// How many sockets are between middleware and handler.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no socket is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, T)>> {
        // The map stays consistent whatever a panicking holder did: every change is one
        // insert or remove.
        self.sockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sockets_past_the_grace_that_never_connected_are_abandoned() {
        let index = Connecting::default();
        let start = Instant::now();
        index.insert("gone", ("gone", false), start);
        index.insert("live", ("live", true), start);
        index.insert("young", ("young", false), start + GRACE);
        let abandoned = index.take_abandoned(start + GRACE + Duration::from_millis(1), |s| s.1);
        assert_eq!(abandoned, vec![("gone", false)]);
        assert_eq!(index.len(), 1, "only the young socket is still watched");
        let later = index.take_abandoned(start + 3 * GRACE, |s| s.1);
        assert_eq!(later, vec![("young", false)]);
        assert!(index.is_empty());
    }

    #[test]
    fn a_socket_taken_over_by_a_handler_is_never_handed_out() {
        let index = Connecting::default();
        let start = Instant::now();
        index.insert("a", 1, start);
        index.remove("a");
        assert!(index
            .take_abandoned(start + 2 * GRACE, |_| false)
            .is_empty());
    }
}
