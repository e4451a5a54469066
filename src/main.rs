//! The `cepheus` binary: wire-up only.

fn main() {
    println!("cepheus {}", env!("CARGO_PKG_VERSION"));
}
