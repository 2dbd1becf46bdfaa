//! The C allocator's tuning, for long-lived runtime processes with many idle threads.

/// Caps glibc's malloc arenas at `n` (`mallopt(M_ARENA_MAX, n)`). By default glibc gives
/// threads that allocate at once arenas of their own, up to 8 per core, each a 64 MiB
/// reservation whose touched pages stay resident: measured on the embedded shim of a
/// two-container pod (release build, 2 cores), 15 arenas held 2080 KiB of its 10.2 MiB
/// PSS; with one arena the main heap grew by 1.1 MiB, 1.2 MiB less in all. A shim's
/// threads mostly wait, so contention on one arena costs nothing measurable. Call it
/// first in `main`, before any thread exists. Returns false when glibc refused (or this
/// is not glibc: then the call is a no-op that returns false).
pub fn limit_malloc_arenas(n: i32) -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only sets a tunable of the allocator; it takes no pointers.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, n) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        let _ = n;
        false
    }
}

/// Gives the free pages inside the C allocator's heap back to the kernel
/// (`malloc_trim(0)`, which since glibc 2.8 releases whole free pages anywhere in the
/// heap, not only at its top). A shim's heap keeps what creating a container needed
/// (specs, seccomp compilation, mount plans) as free chunks between live ones: measured
/// on the embedded shim of a two-container pod, 727 KiB free of a 1.2 MiB heap, 540 KiB
/// of it released by one trim (issue 17). Cheap (one walk of the free lists and a few
/// `madvise` calls): call it when a burst of work is done. Returns whether memory was
/// released (always false off glibc).
pub fn trim_malloc() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim takes no pointers and is safe to call from any thread.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// The environment variable glibc reads its tunables from, once, at start-up.
pub const TUNABLES_ENV: &str = "GLIBC_TUNABLES";

/// The glibc tunable that keeps no stacks of exited threads for reuse. By default glibc
/// caches up to 40 MiB of them, and each cached stack keeps its top resident (the thread
/// descriptor, static TLS and 16 KiB below the last frame: 24 KiB of a tokio blocking-pool
/// thread, measured on a resting shim, whose pool threads end 2 s after their last call).
/// Without the cache an exited thread's stack is unmapped, and a new thread maps a fresh
/// one: a `mmap` and a few page faults more per thread start.
pub const NO_STACK_CACHE: &str = "glibc.pthread.stack_cache_size=0";

/// The value of [`TUNABLES_ENV`] for a child that is to keep no thread stacks cached:
/// `current` (the variable's value here, if set) with [`NO_STACK_CACHE`] appended, so the
/// tunables an operator set still apply (glibc's syntax: `name=value` pairs joined by
/// `:`).
pub fn tunables_without_stack_cache(current: Option<&str>) -> String {
    match current {
        Some(v) if !v.is_empty() => format!("{v}:{NO_STACK_CACHE}"),
        _ => NO_STACK_CACHE.to_string(),
    }
}

/// What [`TUNABLES_ENV`] was before [`tunables_without_stack_cache`] made `value`: the
/// value to give this process's own children, `None` when it was unset. A value not made
/// by it is returned as it is.
pub fn tunables_before(value: &str) -> Option<String> {
    if value == NO_STACK_CACHE {
        return None;
    }
    Some(
        value
            .strip_suffix(&format!(":{NO_STACK_CACHE}"))
            .unwrap_or(value)
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_cache_tunable_is_added_to_and_taken_from_an_operators_tunables() {
        assert_eq!(tunables_without_stack_cache(None), NO_STACK_CACHE);
        assert_eq!(tunables_without_stack_cache(Some("")), NO_STACK_CACHE);
        let theirs = "glibc.malloc.arena_max=2";
        let ours = tunables_without_stack_cache(Some(theirs));
        assert_eq!(ours, format!("{theirs}:{NO_STACK_CACHE}"));
        assert_eq!(tunables_before(&ours).as_deref(), Some(theirs));
        assert_eq!(tunables_before(NO_STACK_CACHE), None);
        assert_eq!(tunables_before(theirs).as_deref(), Some(theirs));
    }
}
