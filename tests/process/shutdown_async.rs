//! Issue 15: `shutdown_async()`, `shutdown()` for async code. Under a
//! current-thread tokio runtime, a blocking `shutdown()` stops every other
//! task of the runtime for as long as the pool's tasks run; the async form
//! must let them go on, and resolve only once the pool is shut down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{with_timeout, LONG};
use concurrent_futures::{
    task, AnyExecutor, Error, Future, ProcessPoolExecutor, ThreadPoolExecutor,
};

/// How long the task that the shutdown waits for runs.
const TASK: Duration = Duration::from_secs(1);

/// Task: sleeps `ms`, then returns it.
fn sleep_ms(ms: u64) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    ms
}

/// Waits until `fut` runs (the shutdown then has to wait for it).
fn until_running<T>(fut: &Future<T>) {
    let deadline = Instant::now() + LONG;
    while !fut.running() {
        assert!(Instant::now() < deadline, "the task never started");
        thread::sleep(Duration::from_millis(1));
    }
}

/// On a current-thread runtime: submits a [`TASK`]-long task with
/// `submit`, then awaits `shutdown_async` while another task of the
/// runtime ticks every 10 ms. Checks that it ticked meanwhile, that the
/// shutdown resolved after the task finished, and the task's value.
fn ticks_while_shutting_down<P>(
    pool: &P,
    submit: impl FnOnce(&P) -> Future<u64>,
    shutdown_async: impl FnOnce(&P) -> Future<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let slow = submit(pool);
        until_running(&slow);
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = Arc::clone(&ticks);
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let started = Instant::now();
        assert_eq!(shutdown_async(pool).await, Ok(()));
        let waited = started.elapsed();
        let ticked = ticks.load(Ordering::SeqCst);
        ticker.abort();
        assert!(slow.done(), "resolved before the task finished");
        // About 100 ticks in 1 s; a blocked runtime thread gives none.
        assert!(
            ticked >= 20,
            "the runtime ticked {ticked} times in {waited:?}: it was blocked"
        );
        assert!(waited >= TASK / 2, "resolved after {waited:?} only");
        assert_eq!(slow.await, Ok(TASK.as_millis() as u64));
    });
}

#[test]
fn thread_pool_shutdown_async_lets_the_runtime_run_and_waits_for_the_task() {
    with_timeout(LONG, || {
        let pool = ThreadPoolExecutor::new(1).expect("a thread pool");
        ticks_while_shutting_down(
            &pool,
            |p| p.submit(|| sleep_ms(TASK.as_millis() as u64)),
            ThreadPoolExecutor::shutdown_async,
        );
        assert_eq!(pool.num_threads(), 0, "a thread is left");
    });
}

#[test]
fn process_pool_shutdown_async_lets_the_runtime_run_and_waits_for_the_task() {
    with_timeout(LONG, || {
        let pool = ProcessPoolExecutor::new(1).expect("a process pool");
        ticks_while_shutting_down(
            &pool,
            |p| p.submit(task!(sleep_ms), TASK.as_millis() as u64),
            ProcessPoolExecutor::shutdown_async,
        );
        assert!(pool.worker_pids().is_empty(), "a worker is left");
    });
}

#[test]
fn any_executor_shutdown_async_waits_for_the_task() {
    with_timeout(LONG, || {
        let pool: AnyExecutor = ProcessPoolExecutor::new(1).expect("a pool").into();
        let AnyExecutor::Processes(inner) = &pool else {
            unreachable!("a process pool was put in");
        };
        let slow = inner.submit(task!(sleep_ms), 200);
        until_running(&slow);
        futures::executor::block_on(pool.shutdown_async()).expect("shut down");
        assert!(slow.done());
        assert!(inner.worker_pids().is_empty(), "a worker is left");
        assert_eq!(slow.result(), Ok(200));
    });
}

/// Shutdown is idempotent: two calls, and a plain `shutdown` after them,
/// all return once the task has finished; the pool then refuses work.
#[test]
fn shutdown_async_twice_both_resolve_after_the_task() {
    with_timeout(LONG, || {
        let pool = ThreadPoolExecutor::new(1).expect("a thread pool");
        let slow = pool.submit(|| sleep_ms(TASK.as_millis() as u64));
        until_running(&slow);
        let first = pool.shutdown_async();
        let second = pool.shutdown_async();
        assert!(
            !first.done() && !second.done(),
            "resolved while the task ran"
        );
        assert_eq!(futures::executor::block_on(second), Ok(()));
        assert!(slow.done());
        assert_eq!(futures::executor::block_on(first), Ok(()));
        pool.shutdown();
        assert_eq!(pool.submit(|| 0).result(), Err(Error::Shutdown));
        assert_eq!(pool.num_threads(), 0);
    });
}

/// From a task of the pool itself, as `shutdown()` there: the pool stops
/// accepting work, nothing waits (it would wait for this very task), and
/// the future is already done.
#[test]
fn shutdown_async_from_a_pool_thread_is_done_at_once() {
    with_timeout(LONG, || {
        let pool = Arc::new(ThreadPoolExecutor::new(1).expect("a thread pool"));
        let inner = Arc::clone(&pool);
        let from_task = pool.submit(move || {
            let done = inner.shutdown_async();
            let was_done = done.done();
            let refused = inner.submit(|| 0).result();
            (was_done, done.result(), refused)
        });
        assert_eq!(from_task.result(), Ok((true, Ok(()), Err(Error::Shutdown))));
        pool.shutdown();
    });
}

/// The future completes on the named thread, and dropping the pool
/// before awaiting does not block: the thread holds the pool.
#[test]
fn the_shutdown_runs_on_a_named_thread_that_holds_the_pool() {
    with_timeout(LONG, || {
        let pool = ThreadPoolExecutor::new(1).expect("a thread pool");
        let slow = pool.submit(|| sleep_ms(TASK.as_millis() as u64));
        until_running(&slow);
        let done = pool.shutdown_async();
        let (tx, rx) = crossbeam_channel::bounded(1);
        done.add_done_callback(move |_| {
            let _ = tx.send(thread::current().name().map(str::to_string));
        });
        let dropped = Instant::now();
        drop(pool);
        assert!(
            dropped.elapsed() < Duration::from_millis(200),
            "dropping the pool waited for its task"
        );
        assert!(!slow.done());
        assert_eq!(
            rx.recv_timeout(LONG).expect("the future completed"),
            Some("concurrent-futures-shutdown".to_string())
        );
        assert!(slow.done());
        assert_eq!(done.result(), Ok(()));
    });
}
