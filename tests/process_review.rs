//! Regressions found by reviewing the rewritten dispatch (review 7).

mod common;
mod process_common;

use std::io;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use concurrent_futures::launch::{Launcher, Local, Spawned, WorkerProcess, WorkerSpec};
use concurrent_futures::{task, Error, ProcessPoolExecutor};
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
            let mut long = pool.submit(task!(gate), scratch.dir());
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
            assert!(long.result_timeout(LONG).is_ok());
        }
    });
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

/// Under `restart_workers` a worker that never started made the pool back
/// off because another worker lived; that one was retiring, and when it
/// exited during the backoff nothing launched a worker for the queued task
/// again: its future never completed, and `shutdown` returned with it
/// pending.
#[test]
fn a_backoff_never_leaves_queued_work_without_a_worker() {
    common::with_timeout(LONG, || {
        let scratch = Scratch::new("backoff");
        let launches = Arc::new(AtomicUsize::new(0));
        let pool = ProcessPoolExecutor::builder()
            .launcher(OneGoodHost {
                launches: Arc::clone(&launches),
            })
            .max_workers(2)
            .restart_workers(true)
            .max_tasks_per_child(1)
            .build()
            .expect("build the pool");
        let mut first = pool.submit(task!(gate), scratch.dir());
        scratch.wait_started(1);
        // The good worker retires after this task: the queued one needs a
        // new worker, which fails; the pool backs off.
        let mut queued = pool.submit(task!(square), 5);
        eventually("the second launch", || launches.load(Ordering::SeqCst) >= 2);
        thread::sleep(Duration::from_millis(20));
        scratch.open();
        assert!(first.result_timeout(LONG).is_ok());
        assert!(matches!(
            queued.result_timeout(LONG),
            Err(Error::BrokenPool(m)) if m.contains("on down")
        ));
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
    let mut child = ChildRun::start("timer_child", &[("CF_TIMER_CHILD", "1")]);
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
