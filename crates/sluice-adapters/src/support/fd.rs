//! The open-files limit of the process.
//!
//! Architecture Invariant: network adapters together leave a reserve of
//! file descriptors for the box, the content store and the other adapters
//! ([`FD_RESERVE`]); each counts its connections against what is left.

/// File descriptors kept out of reach of HTTP connections, for the message
/// box, the content store, logs and other adapters (at least this many, or
/// an eighth of the limit if that is more).
pub const FD_RESERVE: u64 = 512;

/// The soft limit on open files (`RLIMIT_NOFILE`).
pub fn fd_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    ok.then_some(r.rlim_cur)
}

/// Raise the soft limit on open files to the hard limit (a server should
/// not run out at 1024). Returns the limit in force.
pub fn raise_fd_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return None;
        }
        if r.rlim_cur < r.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
    }
    Some(r.rlim_cur)
}
