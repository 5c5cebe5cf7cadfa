//! The launcher seam: the pool starts, names, kills and reaps workers
//! only through `Launcher` and `WorkerProcess`, so a worker need not be a
//! local process it knows the pid of.

use std::io;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::common;
use crate::process_common::*;
use concurrent_futures::launch::{Launcher, Local, Spawned, WorkerProcess, WorkerSpec};
use concurrent_futures::{task, Error, ProcessPoolExecutor};

/// Counts what the pool asks of it.
#[derive(Debug, Default)]
struct Counts {
    launches: AtomicUsize,
    kills: AtomicUsize,
    dropped: AtomicUsize,
}

/// Runs the test binary through `Local`, hides the pid, labels the
/// workers "far-away", and refuses the first `refuse` launches.
#[derive(Debug)]
struct Remote {
    counts: Arc<Counts>,
    refuse: usize,
    slots: usize,
}

/// A worker whose pid the pool does not know.
#[derive(Debug)]
struct Opaque {
    inner: Box<dyn WorkerProcess>,
    counts: Arc<Counts>,
}

impl WorkerProcess for Opaque {
    fn kill(&mut self) -> io::Result<()> {
        self.counts.kills.fetch_add(1, Ordering::SeqCst);
        self.inner.kill()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.inner.try_wait()
    }
}

impl Drop for Opaque {
    fn drop(&mut self) {
        self.counts.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Launcher for Remote {
    fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
        let n = self.counts.launches.fetch_add(1, Ordering::SeqCst);
        if n < self.refuse {
            return Err(Error::Io("far-away: no route to host".to_string()));
        }
        let spec = spec
            .clone()
            .with_args(WORKER_ARGS)
            .with_env("WHERE", "far-away");
        let mut spawned = Local::new().launch(&spec)?;
        spawned.process = Box::new(Opaque {
            inner: spawned.process,
            counts: Arc::clone(&self.counts),
        });
        spawned.label = Some("far-away".to_string());
        Ok(spawned)
    }

    fn default_workers(&self) -> Option<usize> {
        Some(self.slots)
    }
}

/// A pool of one worker started by `launcher`.
fn one_worker(launcher: impl Launcher) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .launcher(launcher)
        .max_workers(1)
        .build()
        .expect("build a process pool")
}

fn place() -> String {
    std::env::var("WHERE").unwrap_or_default()
}

fn remote(refuse: usize) -> (Remote, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    (
        Remote {
            counts: Arc::clone(&counts),
            refuse,
            slots: 3,
        },
        counts,
    )
}

#[test]
fn workers_come_from_the_launcher_with_its_environment_and_slots() {
    let (launcher, counts) = remote(0);
    let pool = ProcessPoolExecutor::builder()
        .launcher(launcher)
        .build()
        .expect("build a process pool");
    assert_eq!(pool.max_workers(), 3, "the launcher's slots");
    assert_eq!(
        pool.submit(task!(place), ()).result_timeout(LONG),
        Ok("far-away".into())
    );
    // No local pid is known, yet the pool works, and lists the worker by
    // the pid its handshake gave (issue 14).
    assert_eq!(pool.worker_pids().len(), 1);
    assert_eq!(counts.launches.load(Ordering::SeqCst), 1);
    common::with_timeout(LONG, move || drop(pool));
    assert_eq!(
        counts.dropped.load(Ordering::SeqCst),
        1,
        "reaped and dropped"
    );
}

#[test]
fn a_death_names_the_launcher_label_and_the_handshake_pid() {
    let (launcher, _counts) = remote(0);
    let pool = one_worker(launcher);
    let worker = pool
        .submit(task!(pid), ())
        .result_timeout(LONG)
        .expect("a pid");
    let mut fut = pool.submit(task!(exit_with), 5);
    let Err(Error::BrokenPool(msg)) = fut.result_timeout(LONG) else {
        panic!("the exit did not break the pool");
    };
    assert!(
        msg.contains(&format!(
            "worker process {worker} on far-away exited with code 5"
        )),
        "{msg}"
    );
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_time_limit_kills_through_the_launcher() {
    let (launcher, counts) = remote(0);
    let pool = one_worker(launcher);
    let limit = Duration::from_millis(200);
    let mut fut = pool.submit(task!(sleep_ms).time_limit(limit), 60_000);
    assert_eq!(fut.result_timeout(LONG), Err(Error::TimeLimit(limit)));
    assert_eq!(counts.kills.load(Ordering::SeqCst), 1);
    assert_eq!(pool.submit(task!(square), 5).result_timeout(LONG), Ok(25));
    assert_eq!(counts.launches.load(Ordering::SeqCst), 2, "one replacement");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_launch_that_fails_fails_the_waiting_future_and_the_next_submit_retries() {
    let (launcher, counts) = remote(1);
    let pool = one_worker(launcher);
    assert_eq!(
        pool.submit(task!(square), 2).result_timeout(LONG),
        Err(Error::Io("far-away: no route to host".to_string()))
    );
    assert_eq!(pool.submit(task!(square), 3).result_timeout(LONG), Ok(9));
    assert_eq!(counts.launches.load(Ordering::SeqCst), 2);
    common::with_timeout(LONG, move || drop(pool));
}

/// A pool of 2 workers under `restart_workers` whose launcher starts one
/// good worker and then only workers that never start.
fn two_over_one_good_host(launches: &Arc<AtomicUsize>) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .launcher(OneGoodHost {
            launches: Arc::clone(launches),
        })
        .max_workers(2)
        .restart_workers(true)
        .build()
        .expect("build a process pool")
}

#[test]
fn a_worker_that_never_starts_does_not_break_a_pool_whose_others_work() {
    let launches = Arc::new(AtomicUsize::new(0));
    let pool = two_over_one_good_host(&launches);
    let first = pool
        .submit(task!(pid), ())
        .result_timeout(LONG)
        .expect("the good worker");
    // Busy the good worker so that the pool wants a second one, which
    // fails before its handshake, round after round.
    let started = std::time::Instant::now();
    for round in 0..10u64 {
        let mut busy = pool.submit(task!(sleep_ms), 50);
        let futs: Vec<_> = (0..5u64)
            .map(|x| pool.submit(task!(square), round + x))
            .collect();
        assert_eq!(busy.result_timeout(LONG), Ok(first));
        for (x, mut f) in (0..5u64).zip(futs) {
            assert_eq!(f.result_timeout(LONG), Ok((round + x) * (round + x)));
        }
    }
    // Every task ran on the good worker; the bad one was retried with
    // backoff (0.1 s, 0.2 s, 0.4 s, ...), not once per submit.
    assert_eq!(pool.worker_pids(), [first]);
    let tries = launches.load(Ordering::SeqCst) - 1;
    let seconds = started.elapsed().as_secs_f64();
    assert!(tries >= 1, "the second worker was never tried");
    assert!(
        (tries as f64) <= 3.0 + seconds * 10.0 && tries < 20,
        "{tries} launches in {seconds:.2} s: a tight respawn loop"
    );
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_lone_worker_that_never_starts_breaks_the_pool_even_under_restart() {
    let launches = Arc::new(AtomicUsize::new(1)); // every launch is "down"
    let pool = two_over_one_good_host(&launches);
    let mut fut = pool.submit(task!(square), 2);
    assert!(matches!(
        fut.result_timeout(LONG),
        Err(Error::BrokenPool(m)) if m.contains("on down") && m.contains("Connection refused")
    ));
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn worker_command_is_a_local_launcher() {
    let exe = std::env::current_exe().expect("the test binary");
    let pool = ProcessPoolExecutor::builder()
        .worker_command(exe.clone())
        .worker_args(WORKER_ARGS)
        .env("WHERE", "here")
        .max_workers(1)
        .build()
        .expect("build a process pool");
    assert_eq!(
        pool.submit(task!(place), ()).result_timeout(LONG),
        Ok("here".into())
    );
    let pid = pool.worker_pids()[0];
    let exe_of_worker = std::fs::read_link(format!("/proc/{pid}/exe")).expect("its exe");
    assert_eq!(exe_of_worker, exe);
    common::with_timeout(LONG, move || drop(pool));
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
