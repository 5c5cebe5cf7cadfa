//! Issue 9: a process pool in a `#[test]` of a binary that declares
//! `concurrent_futures::test_worker!()` needs no `worker_args`, and its
//! workers run only the entry test, never the other tests.

mod common;
mod process_common;

use common::with_timeout;
use concurrent_futures::{task, ProcessPoolExecutor};
use process_common::{Scratch, LONG};

concurrent_futures::test_worker!();

/// Set (to a scratch directory) only in the workers of the test below.
const PROBE: &str = "CF_TEST_WORKER_PROBE";

/// The worker's command-line arguments after the program.
fn worker_args() -> Vec<String> {
    std::env::args().skip(1).collect()
}

fn double(x: u32) -> u32 {
    x * 2
}

#[test]
fn a_pool_without_worker_args_runs_only_the_entry_test_in_its_workers() {
    // In a worker that ran the whole suite, this test would run too: it
    // leaves a mark there and stops.
    if let Some(dir) = std::env::var_os(PROBE) {
        let mark = std::path::Path::new(&dir).join(format!("ran-{}", std::process::id()));
        std::fs::write(mark, b"").expect("leave a mark");
        return;
    }
    let scratch = Scratch::new("test-worker");
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .env(PROBE, scratch.dir())
        .build()
        .expect("a pool in a test with test_worker!()");
    let mut doubled = pool.submit(task!(double), 21);
    assert_eq!(doubled.result_timeout(LONG), Ok(42));
    let mut args = pool.submit(task!(worker_args), ());
    assert_eq!(
        args.result_timeout(LONG),
        Ok(vec![
            "concurrent_futures_worker".to_string(),
            "--exact".to_string(),
            "--nocapture".to_string(),
            "--quiet".to_string(),
        ])
    );
    with_timeout(LONG, move || pool.shutdown());
    assert_eq!(scratch.count("ran-"), 0, "another test ran in a worker");
}
