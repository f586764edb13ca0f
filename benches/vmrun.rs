//! Placeholder replaced by the benchmark in the next commit.
fn main() {}
