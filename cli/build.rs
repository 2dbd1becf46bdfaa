//! Links the binaries with packed relative relocations (DT_RELR): see scripts/relr.rs.

include!("../scripts/relr.rs");

fn main() {
    link_with_relr();
}
