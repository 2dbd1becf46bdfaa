//! Compiles every `protos/*.proto` (wire messages containerd defines that no crate ships)
//! into `$OUT_DIR/protos/<name>.rs` with rust-protobuf 3's codegen and its pure-Rust
//! parser: no protoc, and the same protobuf runtime as `containerd-shim-protos`. The
//! generated files' inner attributes and `//!` lines are dropped so that `src/wire.rs` can
//! `include!` them (it sets the equivalent `allow`s on each module).

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from("protos");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read proto/protos")
        .map(|e| e.expect("read proto/protos entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    inputs.sort();
    println!("cargo:rerun-if-changed=protos");
    for input in &inputs {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    protobuf_codegen::Codegen::new()
        .pure()
        .include(&dir)
        .inputs(&inputs)
        .cargo_out_dir("protos")
        .run_from_script();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("protos");
    for input in &inputs {
        let stem = input.file_stem().expect("a .proto file name");
        let generated = out.join(stem).with_extension("rs");
        let text = std::fs::read_to_string(&generated).expect("read generated code");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
            .collect();
        std::fs::write(&generated, kept.join("\n")).expect("write generated code");
    }
}
