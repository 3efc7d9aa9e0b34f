//! Raising the open-file limit at start, as Envoy's operations guide tells
//! operators to do: every connection takes a descriptor on each side, and
//! the usual soft limit of 1,024 is reached by a few hundred clients, after
//! which every new connection (legit or not) waits in the accept queue. The
//! soft limit is raised to the hard limit, which only the administrator can
//! change. The one other module with `unsafe` (beside `memory`): two libc
//! calls.

/// The soft and hard `RLIMIT_NOFILE` before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub after: u64,
    pub hard: u64,
}

/// Sets the soft open-file limit to the hard one.
#[cfg(unix)]
pub fn raise_to_hard_limit() -> std::io::Result<FdLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    #[expect(unsafe_code)]
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if read != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        #[expect(unsafe_code)]
        // SAFETY: setrlimit reads the struct we own; raising the soft limit
        // up to the hard one needs no privilege.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
        if set != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(FdLimit {
        before,
        after: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let l = super::raise_to_hard_limit().unwrap();
        assert_eq!(l.after, l.hard);
        assert!(l.after >= l.before);
        // Idempotent.
        assert_eq!(super::raise_to_hard_limit().unwrap().before, l.after);
    }
}
