//! Time limits (`Task::time_limit`, `ProcessPoolBuilder::task_time_limit`)
//! and `shutdown_timeout`: a stuck task costs only itself, and can never
//! hang the caller's exit.

use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common;
use crate::process_common::*;
use concurrent_futures::launch::{Launcher, Local, Spawned, WorkerProcess, WorkerSpec};
use concurrent_futures::{task, Error, ProcessPoolExecutor};

const LIMIT: Duration = Duration::from_millis(300);

fn pool_with(restart: bool, n: usize) -> ProcessPoolExecutor {
    if restart {
        restarting_pool(n)
    } else {
        pool(n)
    }
}

/// Two workers under a pool-wide `task_time_limit` of [`LIMIT`].
fn pool_with_a_task_time_limit() -> ProcessPoolExecutor {
    builder()
        .max_workers(2)
        .task_time_limit(LIMIT)
        .build()
        .expect("build a process pool")
}

fn stuck_task_is_killed_at_its_limit_and_the_pool_goes_on(restart: bool) {
    let pool = pool_with(restart, 1);
    let mut fut = pool.submit(task!(stuck).time_limit(LIMIT), ());
    let mut victim = pool.submit(task!(pid), ());
    // `victim`, queued behind the stuck one, runs on the replacement.
    victim.result_timeout(LONG).expect("a pid");
    // The stuck one fails at its limit.
    assert_eq!(fut.result_timeout(LONG), Err(Error::TimeLimit(LIMIT)));
    let after = pool
        .submit(task!(pid), ())
        .result_timeout(LONG)
        .expect("the pool goes on");
    assert_eq!(pool.submit(task!(square), 7).result_timeout(LONG), Ok(49));
    let pids = pool.worker_pids();
    assert_eq!(pids, [after]);
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_stuck_task_is_killed_at_its_limit_and_the_pool_is_not_broken() {
    stuck_task_is_killed_at_its_limit_and_the_pool_goes_on(false);
}

#[test]
fn a_stuck_task_is_killed_at_its_limit_under_restart_workers() {
    stuck_task_is_killed_at_its_limit_and_the_pool_goes_on(true);
}

#[test]
fn the_killed_worker_is_replaced_and_reaped() {
    let pool = pool_with(false, 1);
    let mut fut = pool.submit(task!(stuck).time_limit(LIMIT), ());
    let before = within(LONG, || !pool.worker_pids().is_empty());
    assert!(before);
    let old = pool.worker_pids()[0];
    assert_eq!(fut.result_timeout(LONG), Err(Error::TimeLimit(LIMIT)));
    let new = pool
        .submit(task!(pid), ())
        .result_timeout(LONG)
        .expect("a new worker");
    assert_ne!(new, old);
    assert!(within(LONG, || reaped(old)), "the killed worker lingers");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn the_limit_counts_from_the_start_not_from_submit() {
    // One worker, busy for 3 limits; the limited task waits that long in
    // the queue, then runs well within its limit.
    let pool = pool_with(false, 1);
    let mut busy = pool.submit(task!(sleep_ms), 900);
    let mut limited = pool.submit(task!(sleep_ms).time_limit(LIMIT), 50);
    let worker = busy.result_timeout(LONG).expect("the busy task");
    assert_eq!(limited.result_timeout(LONG), Ok(worker));
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn neighbours_of_a_killed_task_are_untouched() {
    let s = Scratch::new("neighbours");
    let pool = pool_with(false, 2);
    let mut neighbour = pool.submit(task!(gate), s.dir());
    s.wait_started(1);
    let mut fut = pool.submit(task!(stuck).time_limit(LIMIT), ());
    let queued: Vec<_> = (0..4u64).map(|x| pool.submit(task!(square), x)).collect();
    assert_eq!(fut.result_timeout(LONG), Err(Error::TimeLimit(LIMIT)));
    for (x, mut f) in (0..4u64).zip(queued) {
        assert_eq!(f.result_timeout(LONG), Ok(x * x));
    }
    // The neighbour still runs on its worker, and finishes there.
    assert!(!neighbour.done());
    s.open();
    let pid = neighbour.result_timeout(LONG).expect("the neighbour");
    assert!(pool.worker_pids().contains(&pid));
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn the_pool_wide_limit_applies_unless_a_task_sets_its_own() {
    let pool = pool_with_a_task_time_limit();
    let mut default_limited = pool.submit(task!(stuck), ());
    let mut longer = pool.submit(task!(sleep_ms).time_limit(Duration::from_secs(20)), 600);
    assert_eq!(
        default_limited.result_timeout(LONG),
        Err(Error::TimeLimit(LIMIT))
    );
    assert!(longer.result_timeout(LONG).is_ok());
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn map_applies_the_limit_to_each_item() {
    let pool = pool_with_a_task_time_limit();
    let out: Vec<_> = pool
        .map(task!(sleep_ms), [10, 60_000, 10, 20])
        .chunksize(1)
        .timeout(LONG)
        .collect();
    // Like Python's map, the iterator ends at the first failed item.
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].is_ok(), "{out:?}");
    assert_eq!(out[1], Err(Error::TimeLimit(LIMIT)));
    // In a chunk too: four items of 100 ms each keep to a 300 ms limit,
    // though together they run 400 ms.
    let chunked: Vec<_> = pool
        .map(task!(sleep_ms), [100, 100, 100, 100])
        .chunksize(4)
        .timeout(LONG)
        .collect::<Result<_, _>>()
        .expect("no item ran past its limit");
    assert_eq!(chunked.len(), 4);
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_task_within_its_limit_is_not_killed() {
    let pool = pool_with(false, 1);
    let first = pool
        .submit(task!(sleep_ms).time_limit(Duration::from_secs(5)), 100)
        .result_timeout(LONG)
        .expect("within its limit");
    let second = pool
        .submit(task!(pid), ())
        .result_timeout(LONG)
        .expect("a pid");
    assert_eq!(first, second, "the worker was replaced for nothing");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn shutdown_timeout_kills_a_stuck_task_and_leaves_no_process() {
    let pool = pool_with(false, 2);
    let mut stuck_fut = pool.submit(task!(stuck), ());
    let mut done = pool.submit(task!(square), 3);
    assert_eq!(done.result_timeout(LONG), Ok(9));
    let pids = pool.worker_pids();
    assert!(!pids.is_empty());
    let started = Instant::now();
    let pool = common::with_timeout(LONG, move || {
        assert!(!pool.shutdown_timeout(Duration::from_millis(500)));
        pool
    });
    // The deadline plus reaping, with room for a slow machine.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(
        stuck_fut.result_timeout(Duration::ZERO),
        Err(Error::BrokenPool(m)) if m.contains("shutdown_timeout(500ms)")
    ));
    for pid in pids {
        assert!(reaped(pid), "worker {pid} is left behind");
    }
    assert!(pool.worker_pids().is_empty());
    assert_eq!(
        pool.submit(task!(square), 1).result_timeout(LONG),
        Err(Error::Shutdown)
    );
}

#[test]
fn shutdown_timeout_cancels_what_never_started() {
    let pool = pool_with(false, 1);
    let mut running = pool.submit(task!(stuck), ());
    let queued: Vec<_> = (0..3u64).map(|x| pool.submit(task!(square), x)).collect();
    assert!(within(LONG, || running.running()));
    let pool = common::with_timeout(LONG, move || {
        assert!(!pool.shutdown_timeout(Duration::from_millis(300)));
        pool
    });
    assert!(matches!(
        running.result_timeout(Duration::ZERO),
        Err(Error::BrokenPool(_))
    ));
    for f in queued {
        assert!(f.cancelled());
    }
    drop(pool);
}

#[test]
fn shutdown_timeout_returns_true_when_everything_finishes_in_time() {
    let pool = pool_with(false, 2);
    let futs: Vec<_> = (0..6u64)
        .map(|x| pool.submit(task!(sleep_ms), 20 + x))
        .collect();
    let pool = common::with_timeout(LONG, move || {
        assert!(pool.shutdown_timeout(Duration::from_secs(20)));
        pool
    });
    for mut f in futs {
        assert!(f.result_timeout(LONG).is_ok());
    }
    drop(pool);
}

#[test]
fn a_task_killed_at_its_limit_never_runs_again() {
    let s = Scratch::new("once");
    let pool = pool_with(true, 2);
    let mut fut = pool.submit(task!(mark).time_limit(LIMIT), (s.dir(), 1, 60_000));
    assert_eq!(fut.result_timeout(LONG), Err(Error::TimeLimit(LIMIT)));
    assert!(s.ran(1));
    // Let any (wrong) second run happen, then count the runs.
    std::fs::remove_file(s.path().join("ran-1")).expect("the mark");
    assert_eq!(pool.submit(task!(square), 2).result_timeout(LONG), Ok(4));
    assert!(!s.ran(1), "the killed task ran again");
    common::with_timeout(LONG, move || drop(pool));
}

/// Kills through the inner process only after `delay`: a kill that lands
/// late, as one through `ssh` or `srun` may (or a local one racing the
/// task's answer).
#[derive(Debug)]
struct SlowKill {
    inner: Box<dyn WorkerProcess>,
    delay: Duration,
}

impl WorkerProcess for SlowKill {
    fn kill(&mut self) -> io::Result<()> {
        thread::sleep(self.delay);
        self.inner.kill()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.inner.try_wait()
    }
}

#[derive(Debug)]
struct SlowKillLauncher {
    delay: Duration,
}

impl Launcher for SlowKillLauncher {
    fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
        let mut spawned = Local::new().launch(&spec.clone().with_args(WORKER_ARGS))?;
        spawned.process = Box::new(SlowKill {
            inner: spawned.process,
            delay: self.delay,
        });
        Ok(spawned)
    }
}

/// The time limit fired while the task was still running, but the task
/// answered before the kill landed. The pool took the kill for a crash and
/// broke (default policy). A time limit never breaks the pool.
#[test]
fn a_time_limit_kill_that_lands_after_the_answer_does_not_break_the_pool() {
    common::with_timeout(LONG, || {
        let pool = ProcessPoolExecutor::builder()
            .launcher(SlowKillLauncher {
                delay: Duration::from_millis(400),
            })
            .max_workers(1)
            .build()
            .expect("build the pool");
        // Warm: the worker is up, so the limit counts from the send.
        assert_eq!(pool.submit(task!(square), 3).result_timeout(LONG), Ok(9));
        let mut late = pool.submit(task!(sleep_ms).time_limit(Duration::from_millis(100)), 200);
        let worker = late
            .result_timeout(LONG)
            .expect("it answered before the kill");
        eventually("the worker killed and reaped", || reaped(worker));
        let mut after = pool.submit(task!(square), 4);
        assert_eq!(after.result_timeout(LONG), Ok(16));
    });
}

/// Counts the threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

/// The child side of the test below: runs when `CF_TIMER_CHILD` is set.
#[test]
fn timer_child() {
    if std::env::var("CF_TIMER_CHILD").is_err() {
        return;
    }
    let before = threads();
    let pool = pool(1);
    let fut = pool.submit(task!(square).time_limit(LONG), 3);
    let holder = Arc::new(std::sync::Mutex::new(Some(pool)));
    let h = Arc::clone(&holder);
    let (tx, rx) = std::sync::mpsc::channel();
    fut.add_done_callback(move |_| {
        drop(h.lock().unwrap().take());
        let _ = tx.send(());
    });
    rx.recv_timeout(LONG).expect("the callback ran");
    let settled = within(Duration::from_secs(3), || threads() == before);
    println!("threads-settled {settled} {} {before}", threads());
}

/// A pool whose last handle is dropped in a done-callback (on its own
/// reader thread) cannot join its threads; they end on their own, but the
/// time-limit thread waited for deadlines forever.
#[test]
fn the_time_limit_thread_ends_with_a_pool_dropped_on_its_own_thread() {
    let mut child = ChildRun::start(
        &test_path(module_path!(), "timer_child"),
        &[("CF_TIMER_CHILD", "1")],
    );
    let line = child.line_after("threads-settled");
    assert!(line.starts_with("true"), "threads left behind: {line}");
    assert!(child.wait_exit().success());
}

/// `shutdown_timeout` cancels the queued futures when its deadline passes;
/// their done-callbacks run on the calling thread, which held the lock
/// that concurrent shutdowns wait on. A callback that shut the pool down
/// (or dropped its last handle) waited for that lock: a self-deadlock.
#[test]
fn a_callback_that_shuts_down_during_shutdown_timeout_does_not_deadlock() {
    common::with_timeout(LONG, || {
        let scratch = Scratch::new("cancel-callback");
        let pool = Arc::new(pool(1));
        let mut stuck = pool.submit(task!(gate), scratch.dir());
        scratch.wait_started(1);
        let queued = pool.submit(task!(square), 2);
        let p = Arc::clone(&pool);
        let (tx, rx) = std::sync::mpsc::channel();
        queued.add_done_callback(move |_| {
            p.shutdown();
            let _ = tx.send(());
        });
        assert!(!pool.shutdown_timeout(Duration::from_millis(100)));
        assert_eq!(rx.recv_timeout(LONG), Ok(()), "the callback returned");
        assert!(queued.cancelled());
        assert!(matches!(
            stuck.result_timeout(LONG),
            Err(Error::BrokenPool(m)) if m.contains("shutdown_timeout")
        ));
    });
}
