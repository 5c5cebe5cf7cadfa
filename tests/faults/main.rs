//! The fault matrix, one test binary: a worker process dies (`death`), a
//! fake worker breaks the wire protocol (`fake`), the parent dies and tasks
//! abuse the worker's standard streams (`misc`). See `tests/README.md`.
//!
//! Workers are this test binary run again as `worker_entry`; the fakes, the
//! parent and the flood run it again as other tests of their module, found
//! by their full path (`faults_common::test_path`).

#[path = "../faults_common/mod.rs"]
mod faults_common;

mod death;
mod fake;
mod misc;

/// The worker side: serves tasks when this binary runs as a worker.
#[test]
fn worker_entry() {
    concurrent_futures::init();
}
