//! Compiled seccomp programs kept on the host, shared by the runtime's processes.
//!
//! libseccomp needs ~13 to 16 ms here to compile containerd's default profile (three
//! architectures, ~370 syscall names); the in-process cache of [`super::compile`] spares
//! that for the second and later containers of a pod, but every pod has a new shim
//! process, so every pod's first container (the pause, under CRI) paid it again, on the
//! path to pod ready. A store directory (`sandbox::Config::seccomp_store`, the shim's
//! `/run/peapod/shim/<namespace>/seccomp`) keeps each compiled program as one file, so
//! only the first pod of a boot that uses a profile compiles it.
//!
//! # What a file stands for
//! A file is named by the SHA-256 of everything the compiled program depends on: the
//! profile (its canonical JSON), the kernel (`/proc/sys/kernel/random/boot_id`: the
//! flags probed and the syscall table cannot change within a boot), libseccomp (its
//! version and API level, read from the loaded library) and the compiler, this
//! executable (device, inode, size and modification time of `/proc/self/exe`: a new
//! peapod build never reads an older build's programs). A lookup is a hit only for the
//! same inputs; anything else compiles anew and stores the result beside.
//!
//! # Trust
//! The program decides which system calls a container may make, so a file is used only
//! if nobody but this process's user could have written it: the directory and the file
//! must be owned by the effective uid and not group- or world-writable, the directory
//! not a symlink (neither is followed), the file a regular file that parses as a program
//! of 1 to [`super::MAX_INSTRUCTIONS`] instructions. Anything else is ignored (with a
//! warning for a directory that fails the check) and the profile compiled as without a
//! store. Files are written 0600 into a 0700 directory ([`crate::hostdir`]), to a
//! temporary name and renamed, so a reader sees a whole file or none.
//!
//! # Failures
//! The store only saves time: failing to read or write it never fails a create; it is
//! logged at debug level and the profile is compiled. At most [`MAX_ENTRIES`] files are
//! kept: past that, the oldest go when a new one is written (a reboot or an upgrade
//! leaves the previous inputs' files behind; on a tmpfs `/run` a reboot clears them).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::{Program, MAX_INSTRUCTIONS};

/// Files kept in a store directory.
pub const MAX_ENTRIES: usize = 64;

/// Bumped when the file format or the meaning of a name changes.
const FORMAT: &str = "peapod seccomp store 1";

/// Largest file read: [`MAX_INSTRUCTIONS`] as 16 hex digits each, and the JSON around.
const MAX_FILE_BYTES: u64 = (MAX_INSTRUCTIONS as u64) * 16 + 256;

/// The program stored in `dir` for the profile whose canonical JSON is `profile_json`,
/// if a trusted file holds one (see the module doc); `None` on any miss, logged at debug
/// level (warning for an untrusted directory).
pub fn get(dir: &Path, profile_json: &str) -> Option<Program> {
    let name = entry_name(profile_json)?;
    if let Err(reason) = trusted(dir, true) {
        if reason.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), %reason, "seccomp store not used");
        }
        return None;
    }
    let path = dir.join(&name);
    match read_entry(&path) {
        Ok(program) => Some(program),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %e, "seccomp store entry ignored");
            }
            None
        }
    }
}

/// Stores `program`, compiled from `profile_json`, in `dir` (created 0700, missing
/// ancestors 0711, when absent), then drops the oldest files past [`MAX_ENTRIES`].
/// Failures are logged at debug level and otherwise ignored.
pub fn put(dir: &Path, profile_json: &str, program: &Program) {
    let Some(name) = entry_name(profile_json) else {
        return;
    };
    let written = crate::hostdir::create_private(dir)
        .and_then(|()| trusted(dir, false))
        .and_then(|()| write_entry(dir, &name, program));
    if let Err(e) = written {
        tracing::debug!(dir = %dir.display(), error = %e, "seccomp program not stored");
        return;
    }
    if let Err(e) = prune(dir, &name) {
        tracing::debug!(dir = %dir.display(), error = %e, "seccomp store not pruned");
    }
}

/// Where [`super::compile_with`] stores the program of `profile` in `dir`: the file name
/// is the SHA-256 of the inputs (see the module doc); `None` when this process stores
/// nothing (no boot id or no `/proc/self/exe`). For tests and diagnostics.
pub fn path_for(dir: &Path, profile: &oci_spec::runtime::LinuxSeccomp) -> Option<std::path::PathBuf> {
    let json = serde_json::to_string(profile).ok()?;
    Some(dir.join(entry_name(&json)?))
}

/// `<hex SHA-256 of the inputs>.json`, or `None` when this process cannot say what its
/// programs depend on (no boot id or no `/proc/self/exe`): then nothing is stored.
fn entry_name(profile_json: &str) -> Option<String> {
    let inputs = inputs()?;
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    h.update([0]);
    h.update(inputs.as_bytes());
    h.update([0]);
    h.update(profile_json.as_bytes());
    Some(format!("{:x}.json", h.finalize()))
}

/// What a compiled program depends on besides its profile, read once per process.
fn inputs() -> Option<&'static str> {
    static INPUTS: OnceLock<Option<String>> = OnceLock::new();
    INPUTS
        .get_or_init(|| {
            let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map_err(|e| tracing::debug!(error = %e, "no boot id: seccomp store off"))
                .ok()?;
            let exe = fs::metadata("/proc/self/exe")
                .map_err(|e| tracing::debug!(error = %e, "no /proc/self/exe: seccomp store off"))
                .ok()?;
            let lib = libseccomp::ScmpVersion::current()
                .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
                .unwrap_or_default();
            let api = libseccomp::get_api();
            Some(format!(
                "boot {} libseccomp {lib} api {api} exe {}:{} {} {}.{}",
                boot.trim(),
                exe.dev(),
                exe.ino(),
                exe.size(),
                exe.mtime(),
                exe.mtime_nsec()
            ))
        })
        .as_deref()
}

/// Ok if `meta` is owned by the effective uid and not writable by group or others.
fn owned_and_closed(meta: &fs::Metadata, what: &str) -> io::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(io::Error::other(format!(
            "{what} is owned by uid {}, not {euid}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{what} has mode {:o}: group or others may write it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Checks the store directory itself (not followed if a symlink). `missing_ok`: a
/// missing directory is `NotFound`, the normal first use.
fn trusted(dir: &Path, missing_ok: bool) -> io::Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Err(e) if missing_ok => return Err(e),
        other => other?,
    };
    if !meta.is_dir() {
        return Err(io::Error::other("not a directory (a symlink is not followed)"));
    }
    owned_and_closed(&meta, "the directory")
}

fn read_entry(path: &Path) -> io::Result<Program> {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    owned_and_closed(&meta, "the file")?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(io::Error::other(format!(
            "{} bytes, more than a program takes",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes)?;
    let program: Program = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    let n = program.instructions().len();
    if n == 0 || n > MAX_INSTRUCTIONS {
        return Err(io::Error::other(format!("{n} instructions")));
    }
    Ok(program)
}

fn write_entry(dir: &Path, name: &str, program: &Program) -> io::Result<()> {
    let json = serde_json::to_vec(program).map_err(io::Error::other)?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::hostdir::PRIVATE_FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(&json)?;
        fs::rename(&tmp, dir.join(name))
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Removes the oldest files (by modification time) past [`MAX_ENTRIES`], never `keep`.
fn prune(dir: &Path, keep: &str) -> io::Result<()> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == keep {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified()).ok();
        entries.push((modified, entry.path()));
    }
    let excess = (entries.len() + 1).saturating_sub(MAX_ENTRIES);
    if excess == 0 {
        return Ok(());
    }
    entries.sort();
    for (_, path) in entries.into_iter().take(excess) {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::sys::SockFilter;

    fn program(n: usize) -> Program {
        const BPF_RET_K: u16 = 0x06;
        Program {
            instructions: vec![SockFilter::from_bytes([0; 8]); n - 1]
                .into_iter()
                .chain([SockFilter {
                    code: BPF_RET_K,
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000,
                }])
                .collect(),
            flags: 0,
        }
    }

    fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/seccomp");
        (tmp, dir)
    }

    #[test]
    fn a_stored_program_is_found_for_the_same_profile_only() {
        let (_tmp, dir) = store();
        assert_eq!(get(&dir, "{\"a\":1}"), None, "an absent store is a miss");
        put(&dir, "{\"a\":1}", &program(3));
        assert_eq!(get(&dir, "{\"a\":1}"), Some(program(3)));
        assert_eq!(get(&dir, "{\"a\":2}"), None);
        let meta = fs::symlink_metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        let files: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(files.len(), 1, "one file, no temporary left: {files:?}");
        let name = files[0].file_name().into_string().unwrap();
        assert_eq!(Some(name), entry_name("{\"a\":1}"));
        assert_eq!(files[0].metadata().unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn files_others_could_write_or_that_are_not_programs_are_ignored() {
        let (_tmp, dir) = store();
        put(&dir, "{}", &program(2));
        let path = dir.join(entry_name("{}").unwrap());
        assert!(get(&dir, "{}").is_some());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o620)).unwrap();
        assert_eq!(get(&dir, "{}"), None, "a group-writable file");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();

        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(get(&dir, "{}"), None, "a world-writable directory");
        put(&dir, "{\"b\":1}", &program(2));
        let mode = fs::symlink_metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700, "a put closes the directory again before writing");
        assert!(get(&dir, "{\"b\":1}").is_some());

        let link = dir.with_file_name("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert_eq!(get(&link, "{}"), None, "a symlinked directory is not followed");

        for bad in [
            &b"{\"flags\":0,\"bpf\":\"\"}"[..],
            b"{\"flags\":0,\"bpf\":\"0600",
            b"not json",
        ] {
            fs::write(&path, bad).unwrap();
            assert_eq!(get(&dir, "{}"), None, "{}", String::from_utf8_lossy(bad));
        }
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        assert_eq!(get(&dir, "{}"), None, "a symlinked file is not followed");
    }

    #[test]
    fn the_oldest_files_go_past_the_limit() {
        let (_tmp, dir) = store();
        for i in 0..MAX_ENTRIES + 3 {
            put(&dir, &format!("{{\"n\":{i}}}"), &program(2));
            // Distinct modification times, oldest first.
            let path = dir.join(entry_name(&format!("{{\"n\":{i}}}")).unwrap());
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + i as u64);
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        assert_eq!(fs::read_dir(&dir).unwrap().count(), MAX_ENTRIES);
        for i in 0..3 {
            assert_eq!(
                get(&dir, &format!("{{\"n\":{i}}}")),
                None,
                "entry {i} was among the oldest"
            );
        }
        assert!(get(&dir, &format!("{{\"n\":{}}}", MAX_ENTRIES + 2)).is_some());
    }
}
