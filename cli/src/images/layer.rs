//! Layers: digests checked while reading, compressed archives, and unpacking a layer into
//! a directory that overlayfs can stack (whiteouts translated, paths kept inside it).

use super::*;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use sha2::{Digest, Sha256};

/// The hex part of a `sha256:<64 hex>` digest, refusing anything else: digests come from
/// untrusted documents and become file names.
pub(super) fn sha256_hex<'a>(digest: &'a str, what: &str) -> Result<&'a str> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(hex)
        }
        Some((alg @ ("sha384" | "sha512"), _)) => Err(ImageError::Unsupported {
            what: what.to_string(),
            feature: format!("digest algorithm {alg} ({digest})"),
        }),
        _ => Err(invalid(what, format!("malformed digest {digest:?}"))),
    }
}

pub(super) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// `Read` adapter that hashes everything read through it.
pub(super) struct HashingReader<R> {
    pub(super) inner: R,
    pub(super) hasher: Sha256,
    pub(super) len: u64,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub(super) fn digest(self) -> String {
        format!("sha256:{:x}", self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// `Read` adapter that fails as soon as more than `limit` bytes come through, so a
/// decompression bomb is stopped at the limit rather than after it has been written out.
/// `exceeded` tells the caller why the read failed.
pub(super) struct CappedReader<R> {
    inner: R,
    limit: Option<u64>,
    len: u64,
    pub(super) exceeded: bool,
}

impl<R: Read> CappedReader<R> {
    pub(super) fn new(inner: R, limit: Option<u64>) -> Self {
        Self {
            inner,
            limit,
            len: 0,
            exceeded: false,
        }
    }
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(limit) = self.limit else {
            return self.inner.read(buf);
        };
        // One byte past the limit is enough to know it is exceeded.
        let room = usize::try_from((limit + 1).saturating_sub(self.len)).unwrap_or(usize::MAX);
        let want = buf.len().min(room.max(1));
        let n = self.inner.read(&mut buf[..want])?;
        self.len += n as u64;
        if self.len > limit {
            self.exceeded = true;
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("more than the limit of {limit} bytes"),
            ));
        }
        Ok(n)
    }
}

/// Reads a whole JSON document (manifest, index, config) of at most `limit` bytes; a
/// larger one fails with [`ImageError::TooLarge`] before more than `limit + 1` bytes are
/// read. `what` names it in errors.
pub(super) fn read_document(input: impl Read, limit: u64, what: &str, path: &Path) -> Result<Vec<u8>> {
    let mut reader = CappedReader::new(input, Some(limit));
    let mut out = Vec::new();
    match reader.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        Err(_) if reader.exceeded => Err(ImageError::TooLarge {
            what: what.to_string(),
            limit,
            knob: MANIFEST_LIMIT_SOURCE,
        }),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// The digest and length of a file's content.
pub(super) fn hash_file(path: &Path) -> Result<(String, u64)> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut reader = HashingReader::new(file);
    io::copy(&mut reader, &mut io::sink()).map_err(io_err("read", path))?;
    let len = reader.len;
    Ok((reader.digest(), len))
}

/// Checks a document against its descriptor's digest and (when not negative) size.
pub(super) fn check_bytes(bytes: &[u8], digest: &str, size: i64, what: &str) -> Result<()> {
    if let Ok(size) = u64::try_from(size) {
        if size != bytes.len() as u64 {
            return Err(ImageError::Mismatch {
                what: what.to_string(),
                expected: format!("{size} bytes"),
                actual: format!("{} bytes", bytes.len()),
            });
        }
    }
    sha256_hex(digest, what)?;
    check_digest(bytes, digest, what)
}

/// Checks that `bytes` hash to `digest` (`sha256:<hex>`). Errors:
/// [`ImageError::Mismatch`] naming `what`, with both digests.
pub(super) fn check_digest(bytes: &[u8], digest: &str, what: &str) -> Result<()> {
    let actual = sha256_digest(bytes);
    if actual != digest {
        return Err(ImageError::Mismatch {
            what: what.to_string(),
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
    Zstd,
    Other(&'static str),
}

/// Compression of a layer or archive from its first bytes: media types lie (a docker
/// archive's `layer.tar` may be gzip), magic numbers do not.
pub(super) fn compression(magic: &[u8]) -> Compression {
    match magic {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        [b'B', b'Z', b'h', ..] => Compression::Other("bzip2"),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => Compression::Other("xz"),
        _ => Compression::None,
    }
}

/// A decompressing reader for a (possibly gzip-compressed) tar stream.
pub(super) fn decompressed<'a, R: Read + 'a>(input: R, what: &str) -> Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::new(input);
    let magic = input.fill_buf().map_err(io_err("read", Path::new(what)))?.to_vec();
    match compression(&magic) {
        Compression::None => Ok(Box::new(input)),
        Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(input))),
        Compression::Zstd => Err(ImageError::Unsupported {
            what: what.to_string(),
            feature: "compression zstd".into(),
        }),
        Compression::Other(name) => Err(ImageError::Unsupported {
            what: what.to_string(),
            feature: format!("compression {name}"),
        }),
    }
}

/// An archive path made relative and free of `.` and `..`: `None` when it would climb out
/// of the archive's root. The root itself is the empty path.
pub(super) fn clean_path(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What a layer entry means for overlayfs, from its name (OCI image spec, `layer.md`,
/// "Whiteouts").
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Whiteout {
    /// An ordinary entry.
    None,
    /// `<dir>/.wh..wh..opq`: `dir` hides everything below it in lower layers.
    Opaque(PathBuf),
    /// `<dir>/.wh.<name>`: `<dir>/<name>` is deleted from lower layers.
    Delete(PathBuf),
    /// Other `.wh..wh.` entries: AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`), dropped.
    Ignore,
    /// `.wh.`, `.wh..` and `.wh...`: a whiteout naming its own directory (empty, `.`) or the
    /// directory's parent (`..`), never a name in it. Refused, as containerd's
    /// `validateWhiteout` (`pkg/archive/tar.go`) refuses a target not strictly inside the
    /// whiteout's directory: `..` deleted the layer directory's parent.
    Invalid,
}

pub(super) fn classify(rel: &Path) -> Whiteout {
    let Some(name) = rel.file_name() else {
        return Whiteout::None;
    };
    let name = name.as_bytes();
    let parent = rel.parent().unwrap_or(Path::new(""));
    if name == b".wh..wh..opq" {
        Whiteout::Opaque(parent.to_path_buf())
    } else if name.starts_with(b".wh..wh.") {
        Whiteout::Ignore
    } else if let Some(target) = name.strip_prefix(b".wh.") {
        if matches!(target, b"" | b"." | b"..") {
            return Whiteout::Invalid;
        }
        Whiteout::Delete(parent.join(OsStr::from_bytes(target)))
    } else {
        Whiteout::None
    }
}

/// Creates the directory `rel` under `root` and its parents (mode 0755, like Docker) and
/// returns its full path, refusing to go through anything that is not a real directory:
/// a symlink planted by an earlier entry must not lead outside `root`.
pub(super) fn ensure_dirs(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    let mut path = root.to_path_buf();
    for c in rel.components() {
        path.push(c);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a directory", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o755).create(&path)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(path)
}

/// [`ensure_dirs`] for `rel`'s parent; returns the full path of `rel`.
pub(super) fn ensure_parent(root: &Path, rel: &Path) -> io::Result<PathBuf> {
    ensure_dirs(root, rel.parent().unwrap_or(Path::new("")))?;
    Ok(root.join(rel))
}

/// Removes whatever is at `path` (not following symlinks); nothing there is fine.
pub(super) fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(super) fn header_owner(header: &tar::Header) -> io::Result<(u32, u32)> {
    let id = |v: u64| u32::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "uid/gid out of range"));
    Ok((id(header.uid()?)?, id(header.gid()?)?))
}

/// Unpacks one layer (a tar stream, gzip-compressed or not) into `dest`, translating OCI
/// whiteouts to overlayfs ones and keeping modes (setuid included), ownership, mtimes,
/// symlinks, hard links, device nodes, FIFOs and xattrs. Returns the diff-id: the sha256
/// of the uncompressed stream. `layer` names the layer in errors. Needs root (`chown`,
/// `mknod`, `trusted.*` xattrs).
///
/// Nothing is written outside `dest`: entry names with `..` and whiteouts naming `.`, `..`
/// or nothing are refused; parents are never symlinks (the tar crate checks each entry's
/// parent, [`ensure_dirs`] ours); hard links must resolve inside `dest` (the tar crate);
/// the directory mtime pass opens each directory with `openat2(RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS)`, so a directory a later entry replaced with a symlink is skipped,
/// never followed. Setuid bits, device nodes and `security.capability` are kept, as
/// containerd keeps them: the store's root is 0700, so no host user reaches them.
///
/// `limit` caps the uncompressed stream in bytes: reading stops at the first byte past it
/// and the unpack fails with [`ImageError::TooLarge`] (the caller removes `dest`).
pub(crate) fn unpack_layer(input: impl Read, dest: &Path, layer: &str, limit: Option<u64>) -> Result<String> {
    let mut tar_stream = HashingReader::new(CappedReader::new(decompressed(input, layer)?, limit));
    match unpack_entries(&mut tar_stream, dest, layer) {
        Err(_) if tar_stream.inner.exceeded => Err(ImageError::TooLarge {
            what: format!("layer {layer}: uncompressed"),
            limit: limit.unwrap_or_default(),
            knob: LAYER_LIMIT_SOURCE,
        }),
        Err(e) => Err(e),
        Ok(()) => Ok(tar_stream.digest()),
    }
}

/// `e` with the causes it wraps in its message: the tar crate's errors read "failed to
/// unpack `<path>`" and keep the reason (a full disk: ENOSPC) only as their source, which a
/// one-line error message would drop. The kind stays `e`'s.
fn with_inner_cause(e: io::Error) -> io::Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    // An io::Error made from a custom error shows that error, and its source is that
    // error's source: start below what `to_string` already showed.
    if let Some(inner) = e.get_ref() {
        source = inner.source();
    }
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    io::Error::new(e.kind(), message)
}

fn unpack_entries<R: Read>(tar_stream: &mut HashingReader<R>, dest: &Path, layer: &str) -> Result<()> {
    let unpack_err = |entry: &str| {
        let entry = entry.to_string();
        move |cause: io::Error| ImageError::Unpack {
            layer: layer.to_string(),
            entry,
            cause: with_inner_cause(cause),
        }
    };
    let mut dirs = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut *tar_stream);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        // xattrs are applied below, without the overlay ones.
        archive.set_unpack_xattrs(false);
        for entry in archive.entries().map_err(unpack_err("<archive>"))? {
            let mut entry = entry.map_err(unpack_err("<archive>"))?;
            let raw = entry.path().map_err(unpack_err("<archive>"))?.into_owned();
            let name = raw.display().to_string();
            let kind = entry.header().entry_type();
            if kind.is_pax_global_extensions() {
                continue;
            }
            let Some(rel) = clean_path(&raw) else {
                return Err(invalid(
                    format!("layer {layer}"),
                    format!("entry {name:?} climbs out of the layer root"),
                ));
            };
            let (uid, gid) = header_owner(entry.header()).map_err(unpack_err(&name))?;
            match classify(&rel) {
                Whiteout::Opaque(dir) => {
                    let dir = ensure_dirs(dest, &dir).map_err(unpack_err(&name))?;
                    xattr::set(&dir, OVERLAY_OPAQUE_XATTR, b"y").map_err(unpack_err(&name))?;
                    continue;
                }
                Whiteout::Delete(target) => {
                    let path = ensure_parent(dest, &target).map_err(unpack_err(&name))?;
                    remove_existing(&path).map_err(unpack_err(&name))?;
                    mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                        .map_err(|e| unpack_err(&name)(io::Error::from(e)))?;
                    lchown(&path, Some(uid), Some(gid)).map_err(unpack_err(&name))?;
                    continue;
                }
                Whiteout::Ignore => continue,
                Whiteout::Invalid => {
                    return Err(invalid(
                        format!("layer {layer}"),
                        format!(
                            "whiteout entry {name:?} names its own directory or its parent, \
                             not an entry in it"
                        ),
                    ))
                }
                Whiteout::None => {}
            }
            let mtime = entry.header().mtime().unwrap_or(0);
            let xattrs = pax_xattrs(&mut entry).map_err(unpack_err(&name))?;
            let path = dest.join(&rel);
            if rel.as_os_str().is_empty() {
                // The layer root itself (`./`): its mode and owner become the rootfs's `/`.
                if kind.is_dir() {
                    let mode = entry.header().mode().map_err(unpack_err(&name))?;
                    lchown(dest, Some(uid), Some(gid)).map_err(unpack_err(&name))?;
                    fs::set_permissions(dest, fs::Permissions::from_mode(mode & 0o7777)).map_err(unpack_err(&name))?;
                    dirs.push((rel, mtime));
                }
                continue;
            }
            match kind {
                // tar unpacks unknown kinds as regular files: device nodes and FIFOs are ours.
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    let header = entry.header();
                    let sflag = match kind {
                        tar::EntryType::Char => SFlag::S_IFCHR,
                        tar::EntryType::Block => SFlag::S_IFBLK,
                        _ => SFlag::S_IFIFO,
                    };
                    let mode = header.mode().map_err(unpack_err(&name))? & 0o7777;
                    let major = header.device_major().map_err(unpack_err(&name))?.unwrap_or(0);
                    let minor = header.device_minor().map_err(unpack_err(&name))?.unwrap_or(0);
                    let path = ensure_parent(dest, &rel).map_err(unpack_err(&name))?;
                    remove_existing(&path).map_err(unpack_err(&name))?;
                    mknod(
                        &path,
                        sflag,
                        Mode::from_bits_truncate(mode),
                        makedev(u64::from(major), u64::from(minor)),
                    )
                    .map_err(|e| unpack_err(&name)(io::Error::from(e)))?;
                    lchown(&path, Some(uid), Some(gid)).map_err(unpack_err(&name))?;
                    // After chown, which clears setuid/setgid, and past the umask.
                    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(unpack_err(&name))?;
                }
                _ => {
                    if !entry.unpack_in(dest).map_err(unpack_err(&name))? {
                        return Err(invalid(
                            format!("layer {layer}"),
                            format!("entry {name:?} climbs out of the layer root"),
                        ));
                    }
                }
            }
            if !kind.is_symlink() {
                for (key, value) in xattrs {
                    xattr::set(&path, &key, &value).map_err(unpack_err(&name))?;
                }
            }
            if kind.is_dir() {
                dirs.push((rel, mtime));
            }
        }
    }
    // The digest covers the whole stream, end-of-archive blocks and padding included.
    io::copy(tar_stream, &mut io::sink()).map_err(unpack_err("<archive>"))?;
    // Directory mtimes last: creating their entries changed them.
    let root = File::open(dest).map_err(unpack_err("<layer root>"))?;
    for (rel, mtime) in dirs.iter().rev() {
        let time = UNIX_EPOCH + Duration::from_secs(*mtime);
        match open_dir_beneath(&root, rel).and_then(|f| f.set_modified(time)) {
            // Replaced by a later entry of the same layer: gone, or now a symlink or
            // something else than a directory (at `rel` or one of its parents).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR | libc::EXDEV)
                ) => {}
            result => result.map_err(unpack_err(&rel.display().to_string()))?,
        }
    }
    Ok(())
}

/// Opens the directory `rel` under `root` for `futimens`, refusing to resolve any symlink
/// on the way or to leave `root` (`openat2(2)` with `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS`, Linux 5.6): ELOOP when a component is a symlink, ENOTDIR when
/// `rel` is not a directory. `rel` empty is `root` itself.
fn open_dir_beneath(root: &File, rel: &Path) -> io::Result<File> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(root, rel, how).map_err(io::Error::from)?;
    Ok(File::from(fd))
}

/// The entry's xattrs (PAX `SCHILY.xattr.<name>` records), without overlayfs's own.
pub(super) fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for ext in extensions {
            let ext = ext?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                if !name.starts_with("trusted.overlay.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

/// Resolves `.` and `..` in a path without touching the disk; `None` when it climbs out.
pub(super) fn normalize_lexically(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed to unpack `bin/x`")]
    struct Wrapper(#[source] io::Error);

    #[test]
    fn an_unpack_error_names_the_cause_the_tar_crate_keeps_as_its_source() {
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        let e = with_inner_cause(io::Error::new(full.kind(), Wrapper(full)));
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert_eq!(
            e.to_string(),
            "failed to unpack `bin/x`: No space left on device (os error 28)"
        );
    }
}
