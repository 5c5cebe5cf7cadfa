//! Process-pool benchmark (filled in below).
fn main() {}
