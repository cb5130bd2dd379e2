//! Rebuilds the harness when `vectors/` changes: `include_dir!` bundles the
//! vectors into the binary, but on stable Rust it cannot tell cargo which
//! files it read.

fn main() {
    println!("cargo:rerun-if-changed=../vectors");
}
