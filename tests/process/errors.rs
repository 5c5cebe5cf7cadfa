//! The errors of a worker's death tell the truth (issue 16): under the
//! default policy only the task that ran on the dead worker says it died
//! there; every other future says the pool broke because that worker died
//! under another task, and names the task (its submit index or its `map`
//! item). Under `restart_workers` the task's error says its worker died and
//! the pool goes on.

use crate::common;
use crate::process_common::*;
use concurrent_futures::{task, Error, Future};

/// Task: a file scan that blocks on the gate in `dir`; the bad file then
/// aborts the worker, the others return their item.
fn scan(dir: String, item: u32, bad: bool) -> u32 {
    gate(dir);
    if bad {
        std::process::abort();
    }
    item
}

/// The text of a future's error, ", core dumped" left out (whether the
/// system dumps cores is not the pool's business).
fn text<T: std::fmt::Debug>(f: &mut Future<T>) -> String {
    match f.result_timeout(LONG) {
        Err(e) => e.to_string().replace(", core dumped", ""),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// `what` starts `text` and is followed by nothing or by the stderr tail.
#[track_caller]
fn says(text: &str, what: &str) {
    let rest = text.strip_prefix(what);
    assert!(
        rest.is_some_and(|r| r.is_empty() || r.starts_with("; its last stderr lines:")),
        "expected {what:?}, got {text:?}"
    );
}

#[test]
fn under_the_default_policy_only_the_task_that_ran_says_its_worker_died() {
    common::arm_watchdog();
    let (bad, never) = (Scratch::new("err-bad"), Scratch::new("err-never"));
    let pool = pool(2);
    // Submit #0 runs on one worker, #1 (the bad file) on the other; #2
    // and #3 wait in the pool.
    let mut good = pool.submit(task!(scan), (never.dir(), 0, false));
    never.wait_started(1);
    let mut dying = pool.submit(task!(scan), (bad.dir(), 1, true));
    bad.wait_started(1);
    let mut queued: Vec<_> = (2..4)
        .map(|i| pool.submit(task!(scan), (never.dir(), i, false)))
        .collect();
    let victim = bad.pids("started-")[0];
    bad.open();

    let died = format!(
        "the pool is broken: worker process {victim} was killed by signal SIGABRT (6) \
         while running a task"
    );
    says(&text(&mut dying), &died);
    let others = format!(
        "the pool is broken: worker process {victim} was killed by signal SIGABRT (6) \
         while running another task (submit #1)"
    );
    says(&text(&mut good), &others);
    for f in &mut queued {
        says(&text(f), &others);
    }
    // A later submit hears the same.
    says(&text(&mut pool.submit(task!(square), 2)), &others);
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_map_names_the_item_whose_worker_died() {
    common::arm_watchdog();
    let (bad, never) = (Scratch::new("map-bad"), Scratch::new("map-never"));
    let pool = pool(2);
    let files = vec![
        (never.dir(), 0, false),
        (bad.dir(), 1, true),
        (never.dir(), 2, false),
        (never.dir(), 3, false),
    ];
    let mut results = pool.map(task!(scan), files).chunksize(1);
    // The map submits its window at the first `next`, on another thread so
    // that this one can open the gate.
    let first = std::thread::spawn(move || results.next());
    bad.wait_started(1);
    never.wait_started(1);
    let victim = bad.pids("started-")[0];
    bad.open();
    let first = common::with_timeout(LONG, move || first.join().expect("map thread"));
    let Some(Err(e)) = first else {
        panic!("expected the first item to fail, got {first:?}");
    };
    says(
        &e.to_string().replace(", core dumped", ""),
        &format!(
            "the pool is broken: worker process {victim} was killed by signal SIGABRT (6) \
             while running another task (map item 1)"
        ),
    );
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn under_restart_workers_the_task_says_its_worker_died_and_the_pool_goes_on() {
    common::arm_watchdog();
    let bad = Scratch::new("restart-bad");
    let pool = restarting_pool(2);
    let mut dying = pool.submit(task!(scan), (bad.dir(), 1, true));
    bad.wait_started(1);
    let victim = bad.pids("started-")[0];
    bad.open();
    let e = dying.result_timeout(LONG).expect_err("the worker died");
    assert!(matches!(e, Error::WorkerDied(_)), "{e:?}");
    says(
        &e.to_string().replace(", core dumped", ""),
        &format!(
            "the task's worker died, and the pool goes on: worker process {victim} was \
             killed by signal SIGABRT (6) while running a task"
        ),
    );
    // It does.
    let mut next = pool.submit(task!(square), 7);
    assert_eq!(next.result_timeout(LONG), Ok(49));
    common::with_timeout(LONG, move || drop(pool));
}
