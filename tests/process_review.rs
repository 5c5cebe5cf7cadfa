//! Regressions found by reviewing the rewritten dispatch (review 7).

mod common;
mod process_common;

use std::thread;
use std::time::Duration;

use concurrent_futures::task;
use process_common::*;

/// The worker side: `init()` serves tasks when this binary runs as a worker
/// and returns at once in a normal test run.
#[test]
fn worker_entry() {
    concurrent_futures::init();
}

/// A worker went idle while its writer waited for work as a busy one, so
/// the pool did not count it as idle; and a wake-up meant for the queue was
/// taken by the writer of a worker whose long task had closed its window,
/// which went back to sleep without passing it on. Either way a short task
/// waited behind the long one while the other worker sat idle.
#[test]
fn a_queued_task_never_waits_behind_a_long_one_while_a_worker_is_idle() {
    common::with_timeout(4 * LONG, || {
        let pool = pool(2);
        for round in 0..5u64 {
            // Both workers warm: short tasks measured, windows open.
            let warm: Vec<u64> = pool
                .map(task!(square), 0..2000u64)
                .chunksize(1)
                .collect::<Result<_, _>>()
                .expect("the warm-up");
            assert_eq!(warm.len(), 2000);
            let scratch = Scratch::new("idle-peer");
            let long = pool.submit(task!(gate), scratch.dir());
            scratch.wait_started(1);
            for i in 0..5u64 {
                let mut short = pool.submit(task!(square), i);
                assert_eq!(
                    short.result_timeout(Duration::from_secs(5)),
                    Ok(i * i),
                    "round {round}: a short task waited behind the long one"
                );
                thread::sleep(Duration::from_millis(30));
            }
            scratch.open();
            assert!(long.result().is_ok());
        }
    });
}
