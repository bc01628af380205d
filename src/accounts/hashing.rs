//! Bounded password hashing: argon2 with at most one hash per core, a short bounded queue
//! in front, and a deadline.
//!
//! Each argon2 hash (the default parameters) fills ~19 MiB of memory blocks and takes tens of
//! milliseconds of CPU. Run unbounded on tokio's blocking pool (up to 512 threads), a burst of
//! signups or logins ran hundreds of hashes at once: 1.6 GB resident after 100 parallel
//! signups, kept after the burst. Here at most `workers` hashes run at once, each in a memory
//! buffer kept for reuse (so the allocator sees no churn and the peak is `workers` buffers),
//! at most `queue` more wait, each for at most `max_wait`; anything beyond is refused at once
//! with [`Busy`] (REST: `503 unavailable` with `Retry-After`), before any memory is touched.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use argon2::{
    password_hash::{rand_core::OsRng, Output, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
};
use tokio::sync::Semaphore;

use crate::telemetry::Metrics;

/// The hashing capacity is spent: the request was refused without hashing.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the server is busy checking passwords; try again shortly")]
pub struct Busy {
    /// How long the client should wait before retrying.
    pub retry_after: Duration,
}

/// Why a hash or a check did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Refused for capacity (queue full or deadline passed).
    #[error(transparent)]
    Busy(#[from] Busy),
    /// argon2 failed, the stored hash is malformed, or the hashing thread panicked.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// The bounds of a [`HashPool`].
#[derive(Debug, Clone, Copy)]
pub struct HashLimits {
    /// Hashes run at once (0: one per available core).
    pub workers: usize,
    /// Hashes that may wait for a worker; more are refused at once.
    pub queue: usize,
    /// Longest wait for a worker; a request still waiting then is refused.
    pub max_wait: Duration,
}

impl HashLimits {
    /// One worker per core the process may use.
    pub fn workers_or_cores(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Runs argon2 hashes within [`HashLimits`]. Cheap to share behind an `Arc`.
pub struct HashPool {
    /// Waiting plus running hashes (`queue + workers` permits): a request that gets none is
    /// refused without waiting.
    admitted: Arc<Semaphore>,
    /// Running hashes (`workers` permits).
    running: Arc<Semaphore>,
    max_wait: Duration,
    /// Memory blocks of finished hashes, reused by the next (at most `workers` are ever
    /// allocated, since every running hash holds one).
    buffers: Arc<Mutex<Vec<Vec<Block>>>>,
    metrics: Arc<Metrics>,
    /// Unix second of the last refusal logged at `warn` (a storm refuses hundreds a second:
    /// one line a second says so, the metric counts them all).
    last_warned: AtomicU64,
}

impl HashPool {
    /// A pool bounded by `limits`, counting refusals in `metrics`.
    pub fn new(limits: HashLimits, metrics: Arc<Metrics>) -> Self {
        let workers = limits.workers_or_cores();
        Self {
            admitted: Arc::new(Semaphore::new(workers.saturating_add(limits.queue))),
            running: Arc::new(Semaphore::new(workers)),
            max_wait: limits.max_wait,
            buffers: Arc::new(Mutex::new(Vec::with_capacity(workers))),
            metrics,
            last_warned: AtomicU64::new(0),
        }
    }

    /// The argon2id PHC string of `password` with a fresh salt (default parameters).
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move |memory| hash_with(&password, memory)).await
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, password: String, hash: String) -> Result<bool, HashError> {
        self.run(move |memory| verify_with(&password, &hash, memory))
            .await
    }

    /// Checks `password` against a stand-in hash of the default parameters and throws the
    /// answer away: a login for a uid that does not exist costs what a wrong password costs,
    /// so its timing does not tell whether the uid exists. Same queue and bounds as
    /// [`HashPool::verify`] (a storm of unknown uids is refused like any other).
    pub async fn verify_dummy(&self, password: String) -> Result<(), HashError> {
        self.run(move |memory| verify_with(&password, &dummy_hash(), memory).map(|_| ()))
            .await
    }

    async fn run<T, F>(&self, work: F) -> Result<T, HashError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Vec<Block>) -> Result<T, HashError> + Send + 'static,
    {
        let Ok(admitted) = self.admitted.clone().try_acquire_owned() else {
            return Err(self.refuse("queue full"));
        };
        let running =
            match tokio::time::timeout(self.max_wait, self.running.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                // The semaphore is never closed; treat it like a deadline if it ever is.
                Ok(Err(_)) | Err(_) => return Err(self.refuse("deadline passed")),
            };
        let buffers = self.buffers.clone();
        // The permits move into the blocking task: a client that hangs up mid-hash does not
        // free a slot while its hash still runs.
        let task = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            let mut memory = take_buffer(&buffers);
            let result = work(&mut memory);
            give_back(&buffers, memory);
            result
        });
        task.await
            .map_err(|e| HashError::Failed(format!("hashing task: {e}")))?
    }

    fn refuse(&self, reason: &'static str) -> HashError {
        self.metrics.hashes_refused.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_warned.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                reason,
                refused_total = self.metrics.hashes_refused.get(),
                "password hash refused: hashing capacity spent"
            );
        } else {
            tracing::debug!(reason, "password hash refused");
        }
        HashError::Busy(Busy {
            retry_after: Duration::from_secs(1),
        })
    }
}

fn take_buffer(buffers: &Mutex<Vec<Vec<Block>>>) -> Vec<Block> {
    buffers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop()
        .unwrap_or_default()
}

fn give_back(buffers: &Mutex<Vec<Vec<Block>>>, memory: Vec<Block>) {
    buffers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(memory);
}

/// Grows `memory` to the blocks `params` needs (it never shrinks: the next hash reuses it).
fn blocks_for<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    &mut memory[..needed]
}

/// The `len`-byte argon2 output of `password` and `salt`, computed in `memory`: what hashing
/// a new password and checking a stored one have in common.
fn compute(
    argon: &Argon2<'_>,
    password: &str,
    salt: &[u8],
    len: usize,
    params: &Params,
    memory: &mut Vec<Block>,
) -> Result<Output, HashError> {
    Output::init_with(len, |out| {
        argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                out,
                blocks_for(memory, params),
            )
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(failed)
}

fn failed(e: impl std::fmt::Display) -> HashError {
    HashError::Failed(e.to_string())
}

/// argon2id with the crate's default parameters, as `Argon2::default().hash_password` made
/// them (the stored strings are the same format), computed in `memory`.
fn hash_with(password: &str, memory: &mut Vec<Block>) -> Result<String, HashError> {
    let params = Params::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(failed)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output = compute(
        &argon,
        password,
        salt_raw,
        Params::DEFAULT_OUTPUT_LEN,
        &params,
        memory,
    )?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(failed)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// A PHC string with the parameters new hashes get: any salt and output do (no password is
/// known to produce that output), the parameters decide the work.
fn dummy_hash() -> String {
    let params = Params::default();
    format!(
        "$argon2id$v=19$m={},t={},p={}$d2ViY2hhdC1uby1zdWNoLXVzZXI$uk1FT2VAyC/MQQ7mg0kkfH2R54zLyl1wjuhmiOhpPy4",
        params.m_cost(),
        params.t_cost(),
        params.p_cost()
    )
}

/// Recomputes the hash with the parameters and salt stored in `phc`, in `memory`, and
/// compares in constant time (`Output`'s equality).
fn verify_with(password: &str, phc: &str, memory: &mut Vec<Block>) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(phc).map_err(failed)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(failed)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(failed)?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(failed)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(HashError::Failed("stored hash lacks salt or output".into()));
    };
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(failed)?;
    let argon = Argon2::new(algorithm, version, params.clone());
    let computed = compute(&argon, password, salt_raw, expected.len(), &params, memory)?;
    Ok(computed == expected)
}

#[cfg(test)]
mod tests {
    use argon2::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn pool(workers: usize, queue: usize, max_wait: Duration) -> (HashPool, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let limits = HashLimits {
            workers,
            queue,
            max_wait,
        };
        (HashPool::new(limits, metrics.clone()), metrics)
    }

    #[test]
    fn hashes_interoperate_with_the_argon2_crate_both_ways() {
        let mut memory = Vec::new();
        let ours = hash_with("correct horse", &mut memory).expect("hash");
        let parsed = PasswordHash::new(&ours).expect("phc");
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong horse", &parsed)
            .is_err());

        // Hashes stored before this module (made by `Argon2::default()`) still verify.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_with("correct horse", &theirs, &mut memory).expect("verify"));
        assert!(!verify_with("correct hors", &theirs, &mut memory).expect("verify"));
        assert!(matches!(
            verify_with("x", "not a phc string", &mut memory),
            Err(HashError::Failed(_))
        ));
        // The stand-in for unknown uids parses, costs what a real hash costs, matches nothing.
        let real = PasswordHash::new(&ours).expect("phc");
        let dummy = dummy_hash();
        let stand_in = PasswordHash::new(&dummy).expect("dummy phc");
        assert_eq!(stand_in.algorithm, real.algorithm);
        assert_eq!(stand_in.params, real.params);
        assert!(!verify_with("correct horse", &dummy, &mut memory).expect("verify"));
        // One buffer, reused: exactly the default parameters' blocks.
        assert_eq!(memory.len(), Params::default().block_count());
    }

    #[tokio::test]
    async fn beyond_workers_plus_queue_requests_are_refused_at_once() {
        let (pool, metrics) = pool(1, 1, Duration::from_secs(30));
        // Hold the one worker so nothing completes while the queue is probed.
        let held = pool.running.clone().acquire_owned().await.expect("permit");
        let pool = Arc::new(pool);
        let queued = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.hash("password1".into()).await })
        };
        // The queued request holds an admission permit once it waits for a worker.
        while pool.admitted.available_permits() > 1 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let pool = pool.clone();
            async move { pool.hash("password2".into()).await }
        });
        while pool.admitted.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        // Workers (1, held by us but admitted requests count it) + queue (1) are taken.
        let refused = pool.hash("password3".into()).await;
        assert!(matches!(refused, Err(HashError::Busy(_))), "{refused:?}");
        assert_eq!(metrics.hashes_refused.get(), 1);
        drop(held);
        let first = queued.await.expect("task").expect("hashed");
        let second = second.await.expect("task").expect("hashed");
        assert!(pool
            .verify("password1".into(), first)
            .await
            .expect("verify"));
        assert!(!pool
            .verify("password1".into(), second)
            .await
            .expect("verify"));
        assert_eq!(
            pool.buffers.lock().expect("lock").len(),
            1,
            "one worker, one buffer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_past_the_deadline_is_refused() {
        let (pool, metrics) = pool(1, 10, Duration::from_millis(500));
        let _held = pool.running.clone().acquire_owned().await.expect("permit");
        // Paused clock: the timeout fires as soon as the runtime is otherwise idle.
        let refused = pool.hash("password1".into()).await;
        assert!(matches!(refused, Err(HashError::Busy(b)) if b.retry_after.as_secs() >= 1));
        assert_eq!(metrics.hashes_refused.get(), 1);
        assert_eq!(
            pool.admitted.available_permits(),
            11,
            "the slot is given back"
        );
    }
}
