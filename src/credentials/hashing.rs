use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use argon2::{password_hash::PasswordHash, Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("argon2 failed: {0}")]
    Hash(argon2::Error),
    #[error("the hashing threads are gone")]
    Join,
    /// Every hashing thread is busy and the queue in front of them is full.
    #[error("too many argon2 runs are waiting")]
    Busy,
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// One hashing thread's argon2 and its working memory, allocated once and reused: left to the
/// allocator, each run's 19 MiB was kept around in a different arena (100 room creations left
/// the server at 380 MB).
struct Worker {
    params: Params,
    blocks: Vec<Block>,
}

impl Worker {
    fn compute(
        &mut self,
        params: &Params,
        secret: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        if self.blocks.len() < params.block_count() {
            self.blocks.resize(params.block_count(), Block::new());
        }
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
            .hash_password_into_with_memory(
                secret,
                salt,
                out,
                &mut self.blocks[..params.block_count()],
            )
    }

    fn hash(&mut self, secret: &[u8]) -> Result<String, HashError> {
        use base64::Engine as _;
        let salt = rand::random::<[u8; 16]>();
        let mut out = [0u8; 32];
        let params = self.params.clone();
        self.compute(&params, secret, &salt, &mut out)
            .map_err(HashError::Hash)?;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        Ok(format!(
            "$argon2id$v=19$m={},t={},p={}${}${}",
            params.m_cost(),
            params.t_cost(),
            params.p_cost(),
            b64.encode(salt),
            b64.encode(out)
        ))
    }

    /// Whether `secret` matches the PHC string; its own parameters are used, so hashes made under
    /// older settings still verify. A malformed or non-argon2id PHC string never matches.
    fn verify(&mut self, secret: &[u8], phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Ok(params), Ok(Algorithm::Argon2id), Some(expected), Some(salt)) = (
            Params::try_from(&parsed),
            Algorithm::try_from(parsed.algorithm),
            parsed.hash,
            parsed.salt,
        ) else {
            return false;
        };
        let mut salt_buf = [0u8; 64];
        let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        self.compute(&params, secret, salt, &mut out).is_ok()
            && bool::from(expected.as_bytes().ct_eq(&out))
    }
}

/// argon2id on a fixed pool of `threads` dedicated threads: a burst of joins queues up instead
/// of taking every blocking thread, the async executor never runs a hash, and memory stays at
/// `threads` × the argon2 memory cost, each thread reusing its own working memory (on the shared
/// blocking pool, hundreds of threads had each kept 19 MiB). The queue in front of the threads is
/// bounded too: past it a run is refused ([`HashError::Busy`]) rather than made to wait behind
/// everyone else's. The threads end when the last handle is dropped.
#[derive(Clone)]
pub struct Hasher {
    /// To the hashing threads, which share its receiving end behind a mutex that one idle
    /// thread holds while it waits for the next job. Unbounded as a channel; `pending` bounds it.
    jobs: std::sync::mpsc::Sender<Job>,
    /// Runs waiting or running.
    pending: Arc<AtomicUsize>,
    /// The most that may be: the threads' runs and the queue's.
    capacity: usize,
}

/// One run's place in [`Hasher::pending`], given back when the run ends or is dropped unrun.
struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hasher {
    /// `queue` runs may wait for one of the `threads`.
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        threads: usize,
        queue: usize,
    ) -> Result<Self, HashError> {
        let params = Params::new(memory_kib, iterations, parallelism, Some(32))
            .map_err(HashError::Params)?;
        let (jobs, waiting) = std::sync::mpsc::channel::<Job>();
        let waiting = Arc::new(Mutex::new(waiting));
        for i in 0..threads.max(1) {
            let (queue, params) = (waiting.clone(), params.clone());
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut worker = Worker {
                        blocks: vec![Block::new(); params.block_count()],
                        params,
                    };
                    loop {
                        // The lock is held only while waiting for the next job, never during one.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => break,
                        };
                        match job {
                            Ok(job) => job(&mut worker),
                            Err(_) => break,
                        }
                    }
                })
                .map_err(|_| HashError::Join)?;
        }
        Ok(Self {
            jobs,
            pending: Arc::new(AtomicUsize::new(0)),
            capacity: threads.max(1) + queue,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Worker) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(HashError::Busy);
        }
        let place = Pending(self.pending.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |argon2| {
                // A caller that is gone (a client that hung up while its run waited) costs no run.
                if tx.is_closed() {
                    return;
                }
                let out = job(argon2);
                // Free before answering: the caller may try again the moment it has its answer.
                drop(place);
                let _ = tx.send(out);
            }))
            .map_err(|_| HashError::Join)?;
        rx.await.map_err(|_| HashError::Join)
    }

    /// A PHC string (`$argon2id$v=19$m=…`) with a fresh random salt.
    pub async fn hash(&self, secret: Vec<u8>) -> Result<String, HashError> {
        self.run(move |worker| worker.hash(&secret)).await?
    }

    /// Whether `secret` matches `phc`.
    pub async fn verify(&self, secret: Vec<u8>, phc: String) -> Result<bool, HashError> {
        self.run(move |worker| worker.verify(&secret, &phc)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::SaltString;

    fn cheap() -> Hasher {
        Hasher::new(1024, 1, 1, 2, 8).unwrap()
    }

    /// A full queue refuses at once; a place frees as soon as a run ends.
    #[tokio::test]
    async fn past_the_queue_a_run_is_refused_not_queued() {
        let hasher = Hasher::new(1024, 1, 1, 1, 1).unwrap();
        // The one thread is held by a run that waits for the test, and one more run queues.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holding = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.run(move |_| held.recv()).await })
        };
        let queued = {
            let hasher = hasher.clone();
            tokio::spawn(async move { hasher.hash(b"queued".to_vec()).await })
        };
        while hasher.pending.load(Ordering::Relaxed) < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            hasher.hash(b"one too many".to_vec()).await,
            Err(HashError::Busy)
        ));
        release.send(()).unwrap();
        holding.await.unwrap().unwrap().unwrap();
        assert!(queued.await.unwrap().is_ok());
        assert_eq!(hasher.pending.load(Ordering::Relaxed), 0);
        assert!(hasher.hash(b"again".to_vec()).await.is_ok());
    }

    #[tokio::test]
    async fn a_hash_verifies_its_secret_and_nothing_else() {
        let hasher = cheap();
        let phc = hasher.hash(b"correct horse".to_vec()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(hasher
            .verify(b"correct horse".to_vec(), phc.clone())
            .await
            .unwrap());
        assert!(!hasher.verify(b"wrong horse".to_vec(), phc).await.unwrap());
        assert!(!hasher
            .verify(b"x".to_vec(), "not a phc".into())
            .await
            .unwrap());
    }

    /// Hashes made by the argon2 crate's own PHC encoder, under other parameters, still verify;
    /// another argon2 variant does not.
    #[tokio::test]
    async fn verifies_standard_phc_strings_of_other_parameters() {
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let params = Params::new(2048, 2, 1, None).unwrap();
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let hasher = cheap();
        assert!(hasher.verify(b"pw".to_vec(), phc.clone()).await.unwrap());
        assert!(!hasher.verify(b"px".to_vec(), phc).await.unwrap());
        let params = Params::new(1024, 1, 1, None).unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(!hasher.verify(b"pw".to_vec(), argon2i).await.unwrap());
    }

    #[test]
    fn the_default_parameters_meet_the_owasp_minimum() {
        let config = crate::config::Config::defaults();
        assert!(config.argon2_memory_kib >= 19_456);
        assert!(config.argon2_iterations >= 2);
        assert!(config.argon2_parallelism >= 1);
    }

    /// On a current-thread runtime, a hash running on the executor would stall every other task
    /// for its whole duration; here a ticker keeps ticking while several hashes run.
    #[tokio::test(flavor = "current_thread")]
    async fn hashing_runs_off_the_executor() {
        let hasher = Hasher::new(19_456, 2, 1, 1, 8).unwrap();
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ticker = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            })
        };
        for _ in 0..3 {
            hasher.hash(b"secret".to_vec()).await.unwrap();
        }
        ticker.abort();
        // Three hashes take tens of milliseconds; a blocked executor would have ticked once.
        assert!(ticks.load(std::sync::atomic::Ordering::Relaxed) > 3);
    }
}
