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
