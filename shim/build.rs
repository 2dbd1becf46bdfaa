//! Links the binaries with packed relative relocations (DT_RELR): see scripts/relr.rs; and
//! the release shim with the functions a pod's life runs laid out together, first in
//! `.text`, from `symbol-order.txt` (issue 17).
//!
//! A resting shim's RSS is mostly its own text, mapped from the page cache: the kernel maps
//! up to 64 KiB of cached file around every page fault (`fault_around_bytes`), and the
//! disk's readahead has usually cached the whole binary. Where the functions a shim runs
//! are scattered through `.text` among those it never runs, those windows map most of it
//! (5.0 of 5.5 MiB); listed first, they and their windows are a contiguous part. lld
//! (`--symbol-ordering-file`, rustc's default linker on x86_64-unknown-linux-gnu since
//! 1.90) moves each listed function's section, in the list's order; a name it does not
//! find is skipped (`--no-warn-symbol-ordering`), so a stale list only places less. The
//! list holds mangled names, whose hashes change with the compiler and the dependencies:
//! `make symbol-order` (scripts/symbol-order) makes it again, and `make bench` says how
//! much of it a build matches. Only the order changes: code, relocations, RELRO and ASLR
//! are the same.

include!("../scripts/relr.rs");

/// The symbol ordering file, one mangled function name per line (`#` starts a comment).
const SYMBOL_ORDER: &str = "symbol-order.txt";

/// rustc links x86_64-unknown-linux-gnu with its own lld from this release on.
const RUSTC_WITH_LLD: (u32, u32) = (1, 90);

fn main() {
    link_with_relr();
    println!("cargo:rerun-if-changed={SYMBOL_ORDER}");
    let env = |key: &str| std::env::var(key).unwrap_or_default();
    let target = env("TARGET");
    // The list names the release build's symbols (fat LTO); a debug build's differ.
    if env("PROFILE") != "release" || target != "x86_64-unknown-linux-gnu" || target != env("HOST") {
        return;
    }
    match rustc_release(&env("RUSTC")) {
        Some(v) if v >= RUSTC_WITH_LLD => {
            let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join(SYMBOL_ORDER);
            let bin = "containerd-shim-peapod-v2";
            println!("cargo:rustc-link-arg-bin={bin}=-Wl,--symbol-ordering-file={}", order.display());
            println!("cargo:rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
        }
        found => println!("cargo:warning=linking the shim without {SYMBOL_ORDER}: rustc {found:?} links with the system linker, lld is needed"),
    }
}

/// The compiler's release as (major, minor), from `rustc -V` ("rustc 1.95.0 (59807616e
/// 2026-04-14)").
fn rustc_release(rustc: &str) -> Option<(u32, u32)> {
    let out = Command::new(rustc).arg("-V").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    major_minor(text.split_whitespace().nth(1)?)
}
