//! The shutdown (S1-S7) and initializer (I1-I2) lines docs/conformance.md asks
//! of both pools, run against the process pool.
//!
//! Workers are this test binary run again as `worker_entry` (see
//! `process_common`); whole programs (S2, S5) are this binary run again as
//! `child_entry`. Processes are counted by pid and checked in `/proc`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, with_timeout};
use crate::process_common::*;
use concurrent_futures::launch::{Launcher, Local, Spawned, WorkerSpec};
use concurrent_futures::{
    as_completed, task, wait, Error, Executor, ProcessPoolExecutor, ReturnWhen, Shutdown,
};

/// The message of an `Err(Error::BrokenPool)`; fails the test otherwise.
#[track_caller]
fn broken_reason<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::BrokenPool(msg)) => msg,
        other => panic!("expected Err(BrokenPool), got {other:?}"),
    }
}

const NO_WAIT: Shutdown = Shutdown {
    wait: false,
    cancel_futures: false,
};

/// `x * x` after a few milliseconds that depend on `x`, so that tasks
/// finish out of order.
fn slow_square(x: u64) -> u64 {
    thread::sleep(Duration::from_millis((7 - x % 7) * 2));
    x * x
}

// --- S1-S7 ----------------------------------------------------------------

// S1
#[test]
fn submit_after_shutdown_is_already_finished_with_shutdown() {
    let pool = pool(1);
    assert_eq!(pool.submit(task!(square), 3).result_timeout(LONG), Ok(9));
    pool.shutdown();
    let fut = pool.submit(task!(square), 4);
    assert!(fut.done());
    assert_eq!(fut.result(), Err(Error::Shutdown));
    assert_eq!(
        pool.submit_task(task!(square), 4).result(),
        Err(Error::Shutdown)
    );
    let mut it = pool.map(task!(square), 0..3u64);
    assert_eq!(it.next(), Some(Err(Error::Shutdown)));
    assert_eq!(it.next(), None);
    // Also on a pool that never started a worker.
    let fresh = self::pool(1);
    fresh.shutdown();
    assert_eq!(
        fresh.submit(task!(square), 4).result(),
        Err(Error::Shutdown)
    );
    assert!(fresh.worker_pids().is_empty());
}

// S2
#[test]
fn dropping_the_pool_without_shutdown_completes_the_submitted_work() {
    let pool = pool(2);
    let futures: Vec<_> = (0..8u64)
        .map(|x| pool.submit(task!(slow_square), x))
        .collect();
    let pids = pool.worker_pids();
    with_timeout(LONG, move || drop(pool));
    for (x, fut) in (0..8u64).zip(futures) {
        assert!(fut.done());
        assert_eq!(fut.result(), Ok(x * x));
    }
    assert!(pids.iter().all(|&p| reaped(p)), "workers left: {pids:?}");
}

/// Set for the child process that plays a program in S2 and S5: names
/// what it does.
const CHILD_MODE: &str = "CF_TEST_EXECUTOR_CHILD";
/// The scratch directory of the child's tasks.
const CHILD_DIR: &str = "CF_TEST_EXECUTOR_DIR";

/// A whole program when [`CHILD_MODE`] is set (else returns at once).
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let pool = pool(2);
    match mode.as_str() {
        // S2: submit, then end the program without shutdown().
        "drop" => {
            let dir = std::env::var(CHILD_DIR).unwrap();
            for id in 0..4 {
                // Dropping a future does not cancel its task.
                drop(pool.submit(task!(mark), (dir.clone(), id, 50)));
            }
        }
        // S5: shutdown(wait: false) while a task runs, then end normally
        // or exit at once.
        "nowait" | "nowait_exit" => {
            let busy = pool.submit(task!(sleep_ms), 300);
            eventually("the task was sent", || busy.running());
            let started = Instant::now();
            pool.shutdown_with(NO_WAIT);
            println!("RETURNED_MS {}", started.elapsed().as_millis());
            let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
            println!("PIDS {}", pids.join(" "));
            if mode == "nowait_exit" {
                std::process::exit(0);
            }
        }
        other => panic!("unknown mode {other}"),
    }
}

// S2 (as a program)
#[test]
fn program_ending_without_shutdown_completes_the_submitted_work() {
    let scratch = Scratch::new("s2");
    let dir = scratch.dir();
    let mut child = ChildRun::start(
        &test_path(module_path!(), "child_entry"),
        &[(CHILD_MODE, "drop"), (CHILD_DIR, &dir)],
    );
    assert!(child.wait_exit().success());
    let ran: Vec<u32> = (0..4).filter(|&id| scratch.ran(id)).collect();
    assert_eq!(ran, [0, 1, 2, 3]);
}

// S3
#[test]
fn fifty_jobs_then_shutdown_leave_every_result_available() {
    let pool = pool(2);
    let futures: Vec<_> = (0..50u64).map(|x| pool.submit(task!(square), x)).collect();
    let futures = with_timeout(LONG, move || {
        pool.shutdown();
        futures
    });
    for (x, fut) in (0..50u64).zip(futures) {
        assert!(fut.done(), "job {x} not done after shutdown");
        assert_eq!(fut.result(), Ok(x * x));
    }
}

// S4
#[test]
fn shutdown_cancel_futures_cancels_the_queued_and_finishes_the_started() {
    let pool = pool(2);
    let futures: Vec<_> = (0..30).map(|_| pool.submit(task!(sleep_ms), 50)).collect();
    eventually("the first job started", || futures[0].running());
    let futures = with_timeout(LONG, move || {
        pool.shutdown_with(Shutdown {
            wait: true,
            cancel_futures: true,
        });
        futures
    });
    let cancelled = futures.iter().filter(|f| f.cancelled()).count();
    assert!(cancelled >= 15, "only {cancelled} of 30 cancelled");
    let others: Vec<_> = futures.iter().filter(|f| !f.cancelled()).collect();
    assert!(!others.is_empty(), "nothing completed");
    for f in &others {
        assert!(f.done());
        assert_eq!(f.exception(), None);
    }
    // Cancelled futures count as done (CPython gh-92001).
    let (done, not_done) = wait(&futures, Some(LONG), ReturnWhen::AllCompleted);
    assert_eq!((done.len(), not_done.len()), (30, 0));
    let yielded = as_completed(&futures).timeout(LONG).collect::<Vec<_>>();
    assert_eq!(yielded.len(), 30);
    assert!(yielded.iter().all(Result::is_ok));
}

// S5
#[test]
fn shutdown_without_wait_returns_at_once_and_the_task_still_finishes() {
    let pool = pool(1);
    let scratch = Scratch::new("s5");
    let mut fut = pool.submit(task!(gate), scratch.dir());
    scratch.wait_started(1);
    let started = Instant::now();
    pool.shutdown_with(NO_WAIT);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!fut.done());
    scratch.open();
    let worker = fut.result_timeout(LONG).unwrap();
    with_timeout(LONG, move || drop(pool));
    assert!(reaped(worker));
}

// S5 (as a program)
#[test]
fn program_can_exit_after_shutdown_without_wait() {
    for mode in ["nowait", "nowait_exit"] {
        let mut child = ChildRun::start(
            &test_path(module_path!(), "child_entry"),
            &[(CHILD_MODE, mode)],
        );
        let returned: u64 = child.line_after("RETURNED_MS ").parse().unwrap();
        assert!(returned < 250, "shutdown(wait: false) took {returned} ms");
        let pids = parse_pids(&child.line_after("PIDS "));
        assert_eq!(pids.len(), 1);
        assert!(child.wait_exit().success(), "{mode}");
        // No worker outlives the program (it may wait for init to reap it).
        let ended = within(Duration::from_secs(1), || pids.iter().all(|&p| !alive(p)));
        assert!(ended, "{mode}: workers outlived the program: {pids:?}");
    }
}

// S6
#[test]
fn submit_cancel_shutdown_does_not_hang() {
    let pool = pool(1);
    let scratch = Scratch::new("s6");
    let blocker = pool.submit(task!(gate), scratch.dir());
    scratch.wait_started(1);
    let queued: Vec<_> = (0..5u64).map(|x| pool.submit(task!(square), x)).collect();
    let cancelled: Vec<bool> = queued.iter().map(|f| f.cancel()).collect();
    // Only one can already be on its way to the worker.
    assert!(
        cancelled.iter().filter(|&&c| c).count() >= 4,
        "{cancelled:?}"
    );
    scratch.open();
    with_timeout(LONG, move || pool.shutdown());
    assert!(blocker.done());
    for ((x, fut), was_cancelled) in (0..5u64).zip(queued).zip(cancelled) {
        let expected = if was_cancelled {
            Err(Error::Cancelled)
        } else {
            Ok(x * x)
        };
        assert_eq!(fut.result(), expected);
    }
}

// S7
#[test]
fn shutdown_joins_every_worker_process() {
    let workers = 3;
    let pool = pool(workers);
    let scratch = Scratch::new("s7");
    // Two per worker: each worker takes at most two before its first
    // result, so every worker gets one.
    let futures: Vec<_> = (0..2 * workers)
        .map(|_| pool.submit(task!(gate), scratch.dir()))
        .collect();
    scratch.wait_started(workers);
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), workers);
    scratch.open();
    let left = with_timeout(LONG, move || {
        pool.shutdown();
        pool.worker_pids()
    });
    assert!(left.is_empty(), "{left:?}");
    // Exited and reaped: not even zombies remain.
    assert!(pids.iter().all(|&p| reaped(p)), "{pids:?}");
    assert!(futures.iter().all(|f| f.done()));
}

// --- I1, I2 ---------------------------------------------------------------

/// In a worker: the initializer's argument and how many tasks had run
/// when it ran.
fn init_record() -> &'static Mutex<Option<(String, usize)>> {
    static RECORD: Mutex<Option<(String, usize)>> = Mutex::new(None);
    &RECORD
}

static TASKS_RUN: AtomicUsize = AtomicUsize::new(0);

/// The initializer of I1.
fn remember(tag: String) {
    let before = TASKS_RUN.load(Ordering::SeqCst);
    *init_record().lock().unwrap() = Some((tag, before));
}

/// What the initializer left, with the worker's pid; waits at the gate.
fn initialized(dir: String) -> (u32, Option<(String, usize)>) {
    TASKS_RUN.fetch_add(1, Ordering::SeqCst);
    let pid = gate(dir);
    (pid, init_record().lock().unwrap().clone())
}

// I1
#[test]
fn initializer_runs_in_every_worker_before_any_task() {
    let workers = 2;
    let pool = builder()
        .max_workers(workers)
        .initializer(task!(remember), "ready".to_string())
        .build()
        .unwrap();
    let scratch = Scratch::new("i1");
    let futures: Vec<_> = (0..2 * workers)
        .map(|_| pool.submit(task!(initialized), scratch.dir()))
        .collect();
    scratch.wait_started(workers);
    scratch.open();
    let mut pids = BTreeSet::new();
    for mut f in futures {
        let (pid, record) = f.result_timeout(LONG).unwrap();
        assert_eq!(record, Some(("ready".to_string(), 0)));
        pids.insert(pid);
    }
    assert_eq!(pids.len(), workers);

    // Replacement workers run it too.
    let pool = builder()
        .max_workers(1)
        .max_tasks_per_child(1)
        .initializer(task!(remember), "again".to_string())
        .build()
        .unwrap();
    scratch.open();
    let mut pids = BTreeSet::new();
    for _ in 0..3 {
        let (pid, record) = pool
            .submit(task!(initialized), scratch.dir())
            .result_timeout(LONG)
            .unwrap();
        assert_eq!(record, Some(("again".to_string(), 0)));
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 3);
}

/// An initializer that panics.
fn init_panics(reason: String) {
    panic!("{reason}");
}

/// An initializer that fails with `Err`.
fn init_fails(reason: String) -> Result<(), String> {
    Err(reason)
}

fn check_broken_by_initializer(pool: ProcessPoolExecutor, reason: &str) {
    let futures: Vec<_> = (0..6u64).map(|x| pool.submit(task!(square), x)).collect();
    let pids = pool.worker_pids();
    assert!(!pids.is_empty());
    for mut f in futures {
        let msg = broken_reason(f.result_timeout(LONG));
        assert!(msg.contains("initializer") && msg.contains(reason), "{msg}");
    }
    let later = broken_reason(pool.submit(task!(square), 1).result_timeout(LONG));
    assert!(later.contains("initializer"), "{later}");
    let mut it = pool.map(task!(square), 0..3u64).timeout(LONG);
    assert!(matches!(it.next(), Some(Err(Error::BrokenPool(_)))));
    assert_eq!(it.next(), None);
    // Nothing hangs, nothing is left behind.
    let pool = with_timeout(LONG, move || {
        pool.shutdown();
        pool
    });
    assert!(pids.iter().all(|&p| reaped(p)), "{pids:?}");
    // Broken wins over shut down, as in Python (and on the thread pool).
    let after = broken_reason(pool.submit(task!(square), 1).result_timeout(LONG));
    assert!(after.contains("initializer"), "{after}");
    let mut it = pool.map(task!(square), 0..3u64).timeout(LONG);
    assert!(matches!(it.next(), Some(Err(Error::BrokenPool(_)))));
}

// I2
#[test]
fn panicking_initializer_breaks_the_pool() {
    let pool = builder()
        .max_workers(2)
        .initializer(task!(init_panics), "no config".to_string())
        .build()
        .unwrap();
    check_broken_by_initializer(pool, "no config");
}

// I2
#[test]
fn initializer_returning_err_breaks_the_pool() {
    let pool = builder()
        .max_workers(2)
        .initializer(task!(init_fails), "no database".to_string())
        .build()
        .unwrap();
    check_broken_by_initializer(pool, "no database");
}

/// Blocks every launch until it is let go; counts them.
#[derive(Debug, Default)]
struct HeldLaunch {
    entered: Arc<AtomicUsize>,
    go: Arc<AtomicBool>,
}

impl Launcher for HeldLaunch {
    fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        while !self.go.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(2));
        }
        Local::new().launch(&spec.clone().with_args(WORKER_ARGS))
    }
}

/// A submit accepted just before `shutdown` still had its worker being
/// launched; `shutdown()` found no thread to join and returned at once,
/// with the task not even started.
#[test]
fn shutdown_waits_for_a_worker_being_launched() {
    common::with_timeout(LONG, || {
        let (entered, go) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let pool = Arc::new(
            ProcessPoolExecutor::builder()
                .launcher(HeldLaunch {
                    entered: Arc::clone(&entered),
                    go: Arc::clone(&go),
                })
                .max_workers(1)
                .build()
                .expect("build the pool"),
        );
        let p = Arc::clone(&pool);
        let submitter = thread::spawn(move || p.submit(task!(sleep_ms), 100));
        eventually("the launch began", || entered.load(Ordering::SeqCst) == 1);
        let g = Arc::clone(&go);
        let opener = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            g.store(true, Ordering::SeqCst);
        });
        pool.shutdown();
        assert!(
            go.load(Ordering::SeqCst),
            "shutdown returned before the launch it had to wait for ended"
        );
        let mut fut = submitter.join().expect("the submit");
        assert!(fut.done(), "shutdown returned before the task ran");
        assert!(fut.result_timeout(LONG).is_ok());
        opener.join().expect("the opener");
    });
}

/// A done-callback runs on the pool's reader thread; dropping the last pool
/// handle there used to join that worker's writer, which waited for the
/// reader: a deadlock. Now the pool finishes every task.
#[test]
fn dropping_the_pool_in_a_done_callback_does_not_deadlock() {
    let pool = pool(1);
    let futures: Vec<_> = (0..3u64).map(|i| pool.submit(task!(square), i)).collect();
    let (tx, rx) = mpsc::channel();
    let holder = std::sync::Arc::new(std::sync::Mutex::new(Some(pool)));
    let h = holder.clone();
    futures[0].add_done_callback(move |_| {
        let dropped = h.lock().unwrap().take();
        drop(dropped);
        let _ = tx.send(());
    });
    assert_eq!(rx.recv_timeout(LONG), Ok(()), "the callback returned");
    let mut values = Vec::new();
    for mut f in futures {
        values.push(f.result_timeout(LONG));
    }
    assert_eq!(values, vec![Ok(0), Ok(1), Ok(4)]);
}

/// Starts `sleep 30` with the worker's stdio (so it inherits the stderr
/// pipe) and returns its pid.
fn spawn_grandchild() -> u32 {
    std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .map(|c| c.id())
        .unwrap_or(0)
}

/// A grandchild that inherited the worker's stderr keeps that pipe open;
/// shutdown used to wait for it (30 s here). Now it waits at most a moment.
#[test]
fn shutdown_does_not_wait_for_a_grandchild_holding_stderr() {
    let pool = pool(1);
    let mut fut = pool.submit(task!(spawn_grandchild), ());
    let grandchild = fut.result_timeout(LONG).expect("the task ran");
    assert_ne!(grandchild, 0, "sleep started");
    let start = Instant::now();
    let took = common::with_timeout(4 * LONG, move || {
        pool.shutdown();
        start.elapsed()
    });
    let _ = std::process::Command::new("kill")
        .args(["-9", &grandchild.to_string()])
        .status();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}

/// Two threads calling `shutdown()` at once: both return only once the
/// submitted work is done (the second used to return at once).
#[test]
fn concurrent_shutdowns_both_wait_for_the_work() {
    common::with_timeout(LONG, || {
        let pool = std::sync::Arc::new(pool(1));
        let fut = pool.submit(task!(sleep_ms), 300);
        let other = pool.clone();
        let first = thread::spawn(move || other.shutdown());
        thread::sleep(Duration::from_millis(50));
        pool.shutdown();
        assert!(
            fut.done(),
            "the second shutdown returned before the work was done"
        );
        first.join().expect("the first shutdown");
    });
}
