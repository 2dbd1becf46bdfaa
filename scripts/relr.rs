// `include!`d by the build script of each package with binaries the runtime runs (sandbox:
// peapod-init and peapod-pause; shim: containerd-shim-peapod-v2; cli: peapod), whose `main`
// calls `link_with_relr`.
//
// Links the package's binaries with packed relative relocations (`ld -z
// pack-relative-relocs`, DT_RELR; issue 17). A position-independent executable carries one
// 24-byte `Elf64_Rela` per pointer that the loader adjusts to the load address: 13,700 of
// them in the shim (329 KiB of `.rela.dyn`) and 8,500 in peapod-init. The loader reads
// them all at every start, so those pages are resident in every shim. DT_RELR encodes the
// same relocations as bitmaps, a few KiB: the same addresses are relocated, ASLR and
// RELRO are unchanged, and the binary needs glibc 2.36 or later (its
// `GLIBC_ABI_DT_RELR`). Where the C library is older, or the build is a cross build whose
// C library we cannot ask, the binaries are linked as before.

use std::process::Command;

/// DT_RELR came with glibc 2.36 (its loader) and binutils 2.38 (the `-z` option).
const GLIBC_WITH_RELR: (u32, u32) = (2, 36);

fn link_with_relr() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../scripts/relr.rs");
    let env = |key: &str| std::env::var(key).unwrap_or_default();
    let native = env("TARGET") == env("HOST");
    if native && env("CARGO_CFG_TARGET_OS") == "linux" && env("CARGO_CFG_TARGET_ENV") == "gnu" {
        match host_glibc() {
            Some(v) if v >= GLIBC_WITH_RELR => println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs"),
            found => {
                println!("cargo:warning=linking without DT_RELR: glibc {found:?} found, {GLIBC_WITH_RELR:?} needed")
            }
        }
    }
}

/// The host's glibc as (major, minor), from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn host_glibc() -> Option<(u32, u32)> {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    major_minor(text.trim().strip_prefix("glibc ")?)
}

/// (major, minor) of a version such as "2.36" or "1.95.0".
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let (major, rest) = version.split_once('.')?;
    let minor = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
