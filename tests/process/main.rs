//! `ProcessPoolExecutor` on local workers, one test binary: the conformance
//! lines (executor, pool, shutdown and initializer, the ends of a worker's
//! life), dispatch, the launcher seam and time limits. Faults are in
//! `tests/faults/`, remote workers in `tests/cluster/`; see `tests/README.md`.
//!
//! Workers are this test binary run again as `worker_entry` (see
//! `process_common::WORKER_ARGS`); tasks registered with `task!` in any
//! module of it are found there.

#[path = "../common/mod.rs"]
mod common;
#[path = "../process_common/mod.rs"]
mod process_common;

mod agent;
mod ctrl_c;
mod dispatch;
mod errors;
mod executor;
mod launcher;
mod lifecycle;
mod mixed;
mod pool;
mod retries;
mod shutdown;
mod shutdown_async;
mod stats;
mod time_limit;

// Pools that set no `worker_args` (`ctrl_c`'s program) run this entry;
// the others (`process_common::builder`) run `worker_entry`.
concurrent_futures::test_worker!();

/// The worker side: `init()` serves tasks when this binary runs as a worker
/// and returns at once in a normal test run.
#[test]
fn worker_entry() {
    concurrent_futures::init();
}
