//! Issue 9: a process pool built in a `#[test]` of a binary without a
//! worker entry (`concurrent_futures::test_worker!()`) and without
//! `worker_args` is refused: re-run without arguments, the test binary
//! would run its whole suite in every worker.

mod common;
mod process_common;

use common::with_timeout;
use concurrent_futures::{task, Error, ProcessPoolExecutor};
use process_common::{LONG, WORKER_ARGS};

/// The worker side of the explicit route below.
#[test]
fn worker_entry() {
    concurrent_futures::init();
}

fn triple(x: u32) -> u32 {
    x * 3
}

#[test]
fn a_pool_in_a_test_without_an_entry_is_refused_with_what_to_add() {
    let refused = ProcessPoolExecutor::new(1);
    match refused {
        Err(Error::InvalidArgument(msg)) => {
            assert!(msg.contains("concurrent_futures::test_worker!();"), "{msg}");
            assert!(msg.contains("whole test suite"), "{msg}");
        }
        other => panic!("expected Err(InvalidArgument), got {other:?}"),
    }
    // From a thread of the test's own, too.
    let from_a_thread = with_timeout(LONG, || ProcessPoolExecutor::new(1).map(|_| ()));
    assert!(matches!(from_a_thread, Err(Error::InvalidArgument(_))));
}

#[test]
fn explicit_worker_args_are_still_accepted() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_args(WORKER_ARGS)
        .build()
        .expect("worker_args is an explicit choice");
    let mut tripled = pool.submit(task!(triple), 5);
    assert_eq!(tripled.result_timeout(LONG), Ok(15));
    with_timeout(LONG, move || pool.shutdown());
}
