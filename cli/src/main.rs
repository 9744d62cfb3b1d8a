//! The `kfcache` binary (placeholder).
fn main() {}
