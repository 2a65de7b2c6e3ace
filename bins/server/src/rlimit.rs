//! The open-file limit: every connection is a file descriptor, and the usual soft limit
//! (1024) is far below what one `wshub` serves. At start-up the soft limit is raised to the
//! hard one, which only an administrator can raise further (`LimitNOFILE=` in systemd,
//! `ulimit -Hn`, `--ulimit nofile=` in Docker).

use rlimit::Resource;
use tracing::{debug, info, warn};

/// What [`raise_nofile_limit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raised {
    /// The soft limit went from `from` to `to`.
    Raised {
        /// The soft limit before.
        from: u64,
        /// The soft limit now: the hard limit, or the kernel's ceiling below it.
        to: u64,
    },
    /// The soft limit already was the hard limit.
    AlreadyAtHard(u64),
    /// The limit could not be read or set; the soft limit is unchanged.
    Failed,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and logs it: info when raised,
/// warn when it could not be.
pub fn raise_nofile_limit() -> Raised {
    let (soft, hard) = match Resource::NOFILE.get() {
        Ok(limits) => limits,
        Err(e) => {
            warn!(error = %e, "could not read the open-file limit (RLIMIT_NOFILE)");
            return Raised::Failed;
        }
    };
    if soft >= hard {
        debug!(
            limit = soft,
            "the open-file limit already is the hard limit"
        );
        return Raised::AlreadyAtHard(soft);
    }
    // An unlimited hard limit cannot be the soft one on Linux: the kernel caps open files
    // per process at fs.nr_open.
    let target = if hard == rlimit::INFINITY {
        nr_open().unwrap_or(hard)
    } else {
        hard
    };
    match rlimit::increase_nofile_limit(target) {
        Ok(to) if to > soft => {
            info!(from = soft, to, hard, "raised the open-file limit");
            Raised::Raised { from: soft, to }
        }
        Ok(_) => {
            warn!(
                limit = soft,
                hard, "could not raise the open-file limit: the kernel refused a higher one"
            );
            Raised::Failed
        }
        Err(e) => {
            warn!(error = %e, limit = soft, hard, "could not raise the open-file limit");
            Raised::Failed
        }
    }
}

/// The kernel's ceiling on open files per process, where it says.
fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let outcome = raise_nofile_limit();
        let (soft, hard) = Resource::NOFILE.get().unwrap();
        match outcome {
            Raised::Raised { to, .. } => assert_eq!(soft, to),
            Raised::AlreadyAtHard(limit) => assert_eq!((soft, hard), (limit, limit)),
            Raised::Failed => panic!("could not raise the limit: soft {soft}, hard {hard}"),
        }
        // Idempotent: a second call finds it done.
        if hard != rlimit::INFINITY {
            assert_eq!(raise_nofile_limit(), Raised::AlreadyAtHard(hard));
        }
    }
}
