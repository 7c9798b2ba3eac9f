//! Open files: every socket is one, so the process's `RLIMIT_NOFILE` is the ceiling of how many
//! members one node holds. The server raises its soft limit to the hard one at start and, unless
//! the operator set a connection cap, derives the cap from what it got, so that a member is
//! refused with a clear 1013 before `accept` starts failing for everyone with `EMFILE`.

/// Descriptors kept for everything that is not a member's socket: the listeners, the store's
/// files or its MongoDB pool (100 connections at most by the driver's default), the runtime's
/// epoll and event descriptors, logs, and HTTP requests in flight.
pub const RESERVED: u64 = 200;

/// What the process may open, after raising the soft limit as far as the hard limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; `None` where the platform has no such
/// limit or it cannot be read.
pub fn raise() -> Option<OpenFiles> {
    let (before, _) = rlimit::Resource::NOFILE.get().ok()?;
    let now = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(before);
    Some(OpenFiles { before, now })
}

/// The connection cap: the operator's (`Some(0)` for none), or the open-file limit less
/// [`RESERVED`]; without a known limit, the former fixed default of 20,000.
pub fn connection_cap(configured: Option<usize>, files: Option<OpenFiles>) -> usize {
    match (configured, files) {
        (Some(cap), _) => cap,
        (None, Some(files)) => {
            usize::try_from(files.now.saturating_sub(RESERVED).max(1)).unwrap_or(usize::MAX)
        }
        (None, None) => 20_000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_the_operators_or_the_file_limit_less_the_reserve() {
        let files = Some(OpenFiles {
            before: 1024,
            now: 20_000,
        });
        assert_eq!(connection_cap(Some(500), files), 500);
        assert_eq!(connection_cap(Some(0), files), 0);
        assert_eq!(connection_cap(None, files), 19_800);
        assert_eq!(
            connection_cap(
                None,
                Some(OpenFiles {
                    before: 50,
                    now: 50
                })
            ),
            1
        );
        assert_eq!(connection_cap(None, None), 20_000);
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let files = raise().expect("Linux has RLIMIT_NOFILE");
        assert!(files.now >= files.before);
        assert_eq!(rlimit::Resource::NOFILE.get().unwrap().0, files.now);
    }
}
