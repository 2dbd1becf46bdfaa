//! The shim's symbol ordering (issue 17): which of its functions a pod's life runs, and how
//! much of `shim/symbol-order.txt` a build still matches.
//!
//! A resting shim's RSS is mostly its own text, mapped from the page cache: the kernel maps
//! up to 64 KiB around every page fault (`fault_around_bytes`), and the disk's readahead
//! has usually cached the whole binary, so the functions a shim runs, scattered through
//! 5.5 MiB of `.text` among those it never runs, bring in most of it. `shim/build.rs` has
//! lld lay the listed functions out first, together (`--symbol-ordering-file`).
//! `scripts/symbol-order` makes the list: it runs this bench on a build with every
//! function on a page of its own (`-C llvm-args=-align-all-functions=12`), from an ext4
//! with readahead off, so that a page is in the page cache exactly when a process ran the
//! function on it; then `bench --resident-functions <binary>` names them.

use std::collections::HashSet;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context as _, Result};

/// A function symbol of an ELF binary: where its code starts in the file, its size in
/// bytes, and its (mangled) name.
struct Function {
    offset: u64,
    size: u64,
    name: String,
}

/// Runs a binutils tool (`nm`, `readelf`) on `elf` and returns its stdout.
pub fn binutils(tool: &str, args: &[&str], elf: &Path) -> Result<String> {
    let out = Command::new(tool)
        .args(args)
        .arg(elf)
        .output()
        .with_context(|| format!("run {tool} (binutils)"))?;
    ensure!(
        out.status.success(),
        "{tool} {} {}: {}: {}",
        args.join(" "),
        elf.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The defined function symbols of `elf` with a size (`nm -S`: types t, T, w, W inside a
/// `PT_LOAD` segment), with file offsets from the program headers (`readelf -lW`).
fn functions(elf: &Path) -> Result<Vec<Function>> {
    // `  LOAD  0x131000 0x0000000000132000 0x0000000000132000 0x195d770 0x195d770 R E 0x1000`:
    // file offset, virtual address, physical address, size in the file.
    let headers = binutils("readelf", &["-lW"], elf)?;
    let loads: Vec<(u64, u64, u64)> = headers
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next()? == "LOAD").then_some(())?;
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            let offset = hex(f.next()?)?;
            let vaddr = hex(f.next()?)?;
            let filesz = hex(f.nth(1)?)?;
            Some((vaddr, offset, filesz))
        })
        .collect();
    ensure!(!loads.is_empty(), "{}: no PT_LOAD segment (readelf -lW)", elf.display());
    // `00000000001317c0 0000000000000026 T _start`: address, size, type, name.
    let symbols = binutils("nm", &["-S", "--defined-only"], elf)?;
    let functions: Vec<Function> = symbols
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let size = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let name = f.next()?;
            if size == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
                return None;
            }
            let &(vaddr, offset, _) = loads.iter().find(|(v, _, s)| (*v..v + s).contains(&addr))?;
            Some(Function {
                offset: offset + addr - vaddr,
                size,
                name: name.to_string(),
            })
        })
        .collect();
    ensure!(
        !functions.is_empty(),
        "{}: no function symbols (stripped?)",
        elf.display()
    );
    Ok(functions)
}

/// Which pages of the file at `path` are in the page cache (`mincore(2)` on a read-only
/// shared mapping of it), one entry per 4 KiB page.
fn cached_pages(path: &Path) -> Result<Vec<bool>> {
    let file = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let len = usize::try_from(file.metadata()?.len())?;
    ensure!(len > 0, "{} is empty", path.display());
    // SAFETY: a fresh read-only shared mapping of a file we opened; only its residency is
    // read, never its bytes, and it is unmapped before returning.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        bail!("mmap {}: {}", path.display(), std::io::Error::last_os_error());
    }
    let mut vec = vec![0u8; len.div_ceil(4096)];
    // SAFETY: `addr` spans `len` bytes of our mapping and `vec` holds one byte per page.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: the mapping made above, no longer used.
    unsafe { libc::munmap(addr, len) };
    ensure!(rc == 0, "mincore {}: {err}", path.display());
    Ok(vec.into_iter().map(|b| b & 1 == 1).collect())
}

/// The functions of `elf` with a page in the page cache, in address order: on a build with
/// every function page-aligned, read from a file system without readahead, those that
/// some process ran since the file was last evicted (`scripts/symbol-order`).
pub fn resident_functions(elf: &Path) -> Result<Vec<String>> {
    let cached = cached_pages(elf)?;
    let mut functions = functions(elf)?;
    functions.sort_by_key(|f| f.offset);
    Ok(functions
        .into_iter()
        .filter(|f| {
            let pages = f.offset / 4096..=(f.offset + f.size - 1) / 4096;
            pages
                .into_iter()
                .any(|p| usize::try_from(p).is_ok_and(|p| cached.get(p) == Some(&true)))
        })
        .map(|f| f.name)
        .collect())
}

/// How many of the names in the symbol ordering file `order` (one per line, `#` comments,
/// as lld reads it) are functions of `elf`: (found, listed). A stale list (dependencies or
/// the compiler changed the symbols' hashes) still links, with fewer found.
pub fn order_coverage(elf: &Path, order: &Path) -> Result<(usize, usize)> {
    let text = fs::read_to_string(order).with_context(|| format!("read {}", order.display()))?;
    let listed: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let names: HashSet<String> = functions(elf)?.into_iter().map(|f| f.name).collect();
    let found = listed.iter().filter(|n| names.contains(**n)).count();
    Ok((found, listed.len()))
}
