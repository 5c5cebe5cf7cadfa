//! `Task::retries` and `ProcessPoolBuilder::task_retries`: a task whose
//! worker dies under it runs again elsewhere, at most n times and never
//! twice at once; never after a panic, an error or a time limit; after the
//! last try its error names every try.

use crate::common;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::process_common::*;
use concurrent_futures::{task, Error};

/// Appends this try to `{dir}/tries` and returns how many tries there
/// were, this one included.
fn count_try(dir: &str) -> usize {
    let path = Path::new(dir).join("tries");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open the tries file");
    f.write_all(format!("{}\n", std::process::id()).as_bytes())
        .expect("count the try");
    drop(f);
    std::fs::read_to_string(&path)
        .expect("read the tries file")
        .lines()
        .count()
}

/// Task: kills its own worker (SIGKILL) on its first `crashes` tries,
/// then returns the number of its try.
fn crash_first(dir: String, crashes: usize) -> usize {
    let n = count_try(&dir);
    if n <= crashes {
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(60));
    }
    n
}

/// Task: counts its try, then panics.
fn count_then_panic(dir: String) -> usize {
    count_try(&dir);
    panic!("no retry for a panic")
}

/// Task: counts its try, then never returns.
fn count_then_hang(dir: String) -> usize {
    count_try(&dir);
    std::thread::sleep(Duration::from_secs(3600));
    0
}

fn tries(s: &Scratch) -> usize {
    std::fs::read_to_string(s.path().join("tries"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_task_whose_worker_dies_runs_again_until_it_succeeds() {
    let s = Scratch::new("retry-ok");
    let pool = restarting_pool(2);
    let mut fut = pool.submit(task!(crash_first).retries(2), (s.dir(), 2));
    assert_eq!(fut.result_timeout(LONG), Ok(3));
    assert_eq!(tries(&s), 3);
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn the_pool_default_applies_and_a_task_may_set_its_own() {
    let s = Scratch::new("retry-default");
    let pool = builder()
        .max_workers(1)
        .restart_workers(true)
        .task_retries(1)
        .build()
        .expect("a pool");
    let mut once = pool.submit(task!(crash_first), (s.dir(), 1));
    assert_eq!(once.result_timeout(LONG), Ok(2));
    let t = Scratch::new("retry-none");
    let mut never = pool.submit(task!(crash_first).retries(0), (t.dir(), 1));
    assert!(matches!(
        never.result_timeout(LONG),
        Err(Error::WorkerDied(m)) if m.contains("SIGKILL") && !m.contains("try ")
    ));
    assert_eq!(tries(&t), 1);
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn after_the_last_try_the_error_names_every_try() {
    let s = Scratch::new("retry-spent");
    let pool = restarting_pool(1);
    let mut fut = pool.submit(task!(crash_first).retries(2), (s.dir(), 10));
    // Under `restart_workers` the pool goes on: `WorkerDied`.
    let Err(Error::WorkerDied(msg)) = fut.result_timeout(LONG) else {
        panic!("the task succeeded");
    };
    assert_eq!(tries(&s), 3);
    assert!(
        msg.contains("(try 3 of 3; before: try 1: worker process "),
        "{msg}"
    );
    assert!(msg.contains("; try 2: worker process "), "{msg}");
    assert_eq!(msg.matches("SIGKILL").count(), 3, "{msg}");
    // The pool goes on.
    assert_eq!(pool.submit(task!(square), 4).result_timeout(LONG), Ok(16));
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_retry_left_keeps_the_default_pool_from_breaking() {
    // Without restart_workers a dead worker breaks the pool, unless the
    // task that ran there has a retry left.
    let s = Scratch::new("retry-unbroken");
    let pool = pool(1);
    let mut fut = pool.submit(task!(crash_first).retries(1), (s.dir(), 1));
    assert_eq!(fut.result_timeout(LONG), Ok(2));
    assert_eq!(pool.submit(task!(square), 3).result_timeout(LONG), Ok(9));
    // Without a retry the pool breaks, as in Python.
    let t = Scratch::new("retry-broken");
    let mut last = pool.submit(task!(crash_first), (t.dir(), 1));
    assert!(matches!(
        last.result_timeout(LONG),
        Err(Error::BrokenPool(_))
    ));
    assert!(matches!(
        pool.submit(task!(square), 3).result_timeout(LONG),
        Err(Error::BrokenPool(_))
    ));
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_panic_or_a_time_limit_is_never_retried() {
    let s = Scratch::new("retry-panic");
    let pool = restarting_pool(1);
    let mut panicked = pool.submit(task!(count_then_panic).retries(3), s.dir());
    assert!(matches!(
        panicked.result_timeout(LONG),
        Err(Error::Panicked { .. })
    ));
    assert_eq!(tries(&s), 1);
    let t = Scratch::new("retry-limit");
    let limit = Duration::from_millis(300);
    let mut stuck = pool.submit(task!(count_then_hang).retries(3).time_limit(limit), t.dir());
    assert_eq!(stuck.result_timeout(LONG), Err(Error::TimeLimit(limit)));
    assert_eq!(tries(&t), 1);
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_retried_task_never_runs_twice_at_once() {
    // Four tasks, each crashing its worker on its first try, on two
    // workers: every task runs exactly twice, one try after the other.
    let pool = restarting_pool(2);
    let dirs: Vec<Scratch> = (0..4)
        .map(|i| Scratch::new(&format!("retry-once-{i}")))
        .collect();
    let futs: Vec<_> = dirs
        .iter()
        .map(|s| pool.submit(task!(crash_first).retries(1), (s.dir(), 1)))
        .collect();
    for mut f in futs {
        assert_eq!(f.result_timeout(LONG), Ok(2));
    }
    for s in &dirs {
        assert_eq!(tries(s), 2);
    }
    common::with_timeout(LONG, move || drop(pool));
}
