//! Issue 9: a program whose `main` is `#[tokio::main]` calls `init()` inside
//! the runtime. Its workers must run tasks outside that runtime, so a task
//! can build and block on a runtime of its own (as blocking HTTP clients
//! do) instead of panicking with "Cannot start a runtime from within a
//! runtime".
//!
//! A test without libtest (`harness = false` in Cargo.toml): its `main` is
//! the `#[tokio::main]` under test, and its workers are this binary run
//! again.

mod common;

use std::time::Duration;

use concurrent_futures::{task, ProcessPoolExecutor};

const LONG: Duration = Duration::from_secs(20);

/// Whether the task runs inside an entered tokio runtime.
fn inside_a_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// Builds a runtime and blocks on it, as a blocking HTTP client does.
fn with_own_runtime(x: u64) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a runtime in the task");
    rt.block_on(async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        x + 1
    })
}

#[tokio::main]
async fn main() {
    concurrent_futures::init();
    // The backstop for a hang where no call has a timeout (the pool's drop).
    common::arm_watchdog();
    assert!(
        inside_a_runtime(),
        "the test itself runs inside the runtime"
    );
    let pool = ProcessPoolExecutor::new(1).expect("build the pool");
    let mut inside = pool.submit(task!(inside_a_runtime), ());
    assert_eq!(inside.result_timeout(LONG), Ok(false));
    let mut own = pool.submit(task!(with_own_runtime), 41);
    assert_eq!(own.result_timeout(LONG), Ok(42));
    pool.shutdown();
    println!("tokio_main: tasks in a #[tokio::main] worker run outside its runtime: ok");
}
