//! Load tests: 64 threads submit to one pool at the same moment, a million
//! tasks in all. Every future must resolve exactly once with its own value
//! (each task returns a value derived from its submitter and index, and the
//! value moves out once), every future's done-callback must run exactly
//! once, and nothing may hang: every wait has a timeout, and so has the
//! whole run.
//!
//! The thread pool takes the full million in every `cargo test` (about 2 s
//! in a debug build). The process pool takes 256,000 tasks there (about 2 s;
//! the million takes 8 s in a debug build, too long beside the rest of the
//! suite) and the full million in an `#[ignore]`d test (`cargo test --release
//! --test load -- --ignored`, run by `scripts/deep-check`).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{task, Error, Future, ProcessPoolExecutor, ThreadPoolExecutor};

/// Threads submitting at once.
const SUBMITTERS: usize = 64;
/// The longest any one future may take to resolve.
const LONG: Duration = Duration::from_secs(60);
/// The longest a whole run may take.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The worker side: `init()` serves tasks when this binary runs as a worker
/// and returns at once in a normal test run.
#[test]
fn worker_entry() {
    concurrent_futures::init();
}

/// The key of task `index` of submitter `thread`.
fn key(thread: usize, index: usize) -> u64 {
    ((thread as u64) << 32) | index as u64
}

/// Task: the value only `key` gives.
fn tag(key: u64) -> u64 {
    (key ^ 0x5DEE_CE66_D1CE_5EED).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// What the done-callbacks record.
struct Tally {
    /// Callback runs per future, indexed `thread * per_thread + index`.
    calls: Vec<AtomicU8>,
    total: AtomicUsize,
    /// Callbacks that saw a future not done, or failed.
    odd: AtomicUsize,
}

/// How a submitter hands a key to the pool.
type Submit = dyn Fn(u64) -> Future<u64> + Send + Sync;

/// Runs `f` on its own thread; fails the test if it takes longer than
/// `limit`, passes a panic in `f` on.
fn with_timeout<R: Send + 'static>(limit: Duration, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let handle = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(r) => {
            let _ = handle.join();
            r
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("the closure neither returned nor panicked"),
        },
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            panic!("hung: the load run did not finish within {limit:?}")
        }
    }
}

/// [`SUBMITTERS`] threads, released together, each submit `per_thread`
/// tasks through `submit`, adding a counting done-callback to each future
/// as soon as it has it; then each takes every result with a timeout and
/// checks it. `shutdown` runs after the submitters are done; it must wait
/// for the pool, so that every callback has run when it returns.
fn hammer(
    what: &str,
    per_thread: usize,
    submit: Arc<Submit>,
    shutdown: impl FnOnce() + Send + 'static,
) {
    let total = SUBMITTERS * per_thread;
    let tally = Arc::new(Tally {
        calls: (0..total).map(|_| AtomicU8::new(0)).collect(),
        total: AtomicUsize::new(0),
        odd: AtomicUsize::new(0),
    });
    let t = Arc::clone(&tally);
    let (submitted, finished) = with_timeout(RUN_LIMIT, move || {
        let barrier = Arc::new(Barrier::new(SUBMITTERS + 1));
        let threads: Vec<_> = (0..SUBMITTERS)
            .map(|thread| {
                let (barrier, submit, tally) =
                    (Arc::clone(&barrier), Arc::clone(&submit), Arc::clone(&t));
                thread::spawn(move || {
                    barrier.wait();
                    let mut futures = Vec::with_capacity(per_thread);
                    for index in 0..per_thread {
                        let k = key(thread, index);
                        let f = submit(k);
                        let tally = Arc::clone(&tally);
                        let slot = thread * per_thread + index;
                        f.add_done_callback(move |f| {
                            if !f.done() || f.exception().is_some() {
                                tally.odd.fetch_add(1, Ordering::Relaxed);
                            }
                            tally.calls[slot].fetch_add(1, Ordering::Relaxed);
                            tally.total.fetch_add(1, Ordering::Relaxed);
                        });
                        futures.push((k, f));
                    }
                    let submitted = Instant::now();
                    for (k, mut f) in futures {
                        assert_eq!(f.result_timeout(LONG), Ok(tag(k)), "task {k:#x}");
                        // The value moved out: a second take finds it gone.
                        assert_eq!(f.result_timeout(Duration::ZERO), Err(Error::AlreadyTaken));
                    }
                    submitted
                })
            })
            .collect();
        let start = Instant::now();
        barrier.wait();
        let last_submit = threads
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .max()
            .expect("submitters");
        let all_results = start.elapsed();
        shutdown();
        (last_submit - start, all_results)
    });
    println!(
        "{what}: {SUBMITTERS} threads x {per_thread} = {total} tasks; \
         last submitter done submitting after {submitted:.2?}, all results after \
         {finished:.2?} ({:.0} tasks/s)",
        total as f64 / finished.as_secs_f64()
    );
    println!(
        "{what}: peak RSS of this test process so far: {} kB",
        peak_rss_kb()
    );
    assert_eq!(
        tally.odd.load(Ordering::Relaxed),
        0,
        "callbacks saw odd futures"
    );
    assert_eq!(tally.total.load(Ordering::Relaxed), total, "callback runs");
    for (slot, calls) in tally.calls.iter().enumerate() {
        let calls = calls.load(Ordering::Relaxed);
        assert_eq!(
            calls,
            1,
            "the callback of task {} of submitter {} ran {calls} times",
            slot % per_thread,
            slot / per_thread
        );
    }
}

/// `VmHWM` of this process, in kB: the most resident memory it ever had.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn thread_pool_load(per_thread: usize) {
    let pool = Arc::new(ThreadPoolExecutor::new(8).expect("a thread pool"));
    let p = Arc::clone(&pool);
    let submit: Arc<Submit> = Arc::new(move |k| p.submit(move || tag(k)));
    hammer("thread pool", per_thread, submit, move || pool.shutdown());
}

fn process_pool_load(per_thread: usize) {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(2)
        .worker_args(["worker_entry", "--exact", "--nocapture", "--quiet"])
        .build()
        .expect("a process pool");
    let pool = Arc::new(pool);
    let p = Arc::clone(&pool);
    let submit: Arc<Submit> = Arc::new(move |k| p.submit(task!(tag), k));
    hammer("process pool", per_thread, submit, move || pool.shutdown());
}

#[test]
fn thread_pool_64_submitters_1m_tasks() {
    thread_pool_load(1_000_000 / SUBMITTERS);
}

#[test]
fn process_pool_64_submitters_256k_tasks() {
    process_pool_load(4_000);
}

#[test]
#[ignore = "load: 1,000,000 process-pool tasks; run by scripts/deep-check"]
fn process_pool_64_submitters_1m_tasks() {
    process_pool_load(1_000_000 / SUBMITTERS);
}
