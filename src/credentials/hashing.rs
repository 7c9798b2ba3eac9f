use std::sync::{Arc, Mutex};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    #[error("argon2 failed: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the hashing threads are gone")]
    Join,
}

type Job = Box<dyn FnOnce(&Argon2<'static>) + Send>;

/// argon2id on a fixed pool of `threads` dedicated threads: a burst of joins queues up instead
/// of taking every blocking thread, the async executor never runs a hash, and memory stays at
/// `threads` × the argon2 memory cost (each thread reuses its allocator arena; on the shared
/// blocking pool, hundreds of threads each kept their own 19 MiB). The threads end when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Hasher {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl Hasher {
    pub fn new(
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
        threads: usize,
    ) -> Result<Self, HashError> {
        let params = Params::new(memory_kib, iterations, parallelism, Some(32))
            .map_err(HashError::Params)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads.max(1) {
            let (queue, params) = (queue.clone(), params.clone());
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
                    loop {
                        // The lock is held only while waiting for the next job, never during one.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => break,
                        };
                        match job {
                            Ok(job) => job(&argon2),
                            Err(_) => break,
                        }
                    }
                })
                .map_err(|_| HashError::Join)?;
        }
        Ok(Self { jobs })
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |argon2| {
                let _ = tx.send(job(argon2));
            }))
            .map_err(|_| HashError::Join)?;
        rx.await.map_err(|_| HashError::Join)
    }

    /// A PHC string (`$argon2id$v=19$m=…`) with a fresh random salt.
    pub async fn hash(&self, secret: Vec<u8>) -> Result<String, HashError> {
        self.run(move |argon2| {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2
                .hash_password(&secret, &salt)
                .map(|h| h.to_string())
                .map_err(HashError::Hash)
        })
        .await?
    }

    /// Whether `secret` matches `phc`. The parameters come from the PHC string, so hashes made
    /// under older settings still verify. A malformed PHC string never matches.
    pub async fn verify(&self, secret: Vec<u8>, phc: String) -> Result<bool, HashError> {
        self.run(move |argon2| {
            PasswordHash::new(&phc)
                .map(|parsed| argon2.verify_password(&secret, &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Hasher {
        Hasher::new(1024, 1, 1, 2).unwrap()
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
        let hasher = Hasher::new(19_456, 2, 1, 1).unwrap();
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
