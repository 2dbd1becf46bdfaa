//! `execve(2)` with its argument and environment arrays built in advance, so that the
//! call itself does not allocate: container init builds them before it loads its
//! seccomp filter, and only `execve` runs under the filter.

use std::ffi::{c_char, CString};

/// A program, its arguments and environment, with the NULL-terminated pointer arrays
/// `execve(2)` takes, built once by [`ExecArgs::new`].
#[derive(Debug)]
pub struct ExecArgs {
    program: CString,
    // The pointers below point into these strings' heap buffers, which do not move when
    // the vectors (or this struct) move.
    _args: Vec<CString>,
    _env: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

impl ExecArgs {
    /// Builds the pointer arrays for `program` with `args` (argv, `args[0]` included)
    /// and `env` (`KEY=value` strings).
    pub fn new(program: CString, args: Vec<CString>, env: Vec<CString>) -> ExecArgs {
        let argv = args.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        let envp = env.iter().map(|e| e.as_ptr()).chain([std::ptr::null()]).collect();
        ExecArgs {
            program,
            _args: args,
            _env: env,
            argv,
            envp,
        }
    }

    /// Replaces the calling process; returns only on failure, with the errno (ENOENT,
    /// EACCES, ENOEXEC, E2BIG, or EPERM from a seccomp filter). Does not allocate.
    pub fn execve(&self) -> nix::Error {
        // SAFETY: `program` is a NUL-terminated CString; `argv` and `envp` are
        // NULL-terminated arrays of pointers into CStrings owned by `self`, all of which
        // outlive the call (on success the process image is replaced; on failure nothing
        // was retained by the kernel).
        unsafe { libc::execve(self.program.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
        nix::Error::last()
    }
}
