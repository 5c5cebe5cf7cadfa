//! Mixed work: after a burst of tiny tasks, what a worker was sent ahead
//! of its running task is never stranded there. It is pending (not
//! running), it can be cancelled wherever it waits, it moves to a worker
//! that goes idle, and a cancel that races the worker starting it never
//! lets a cancelled task run. Time limits in a `map` are per item.

use crate::common;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::process_common::*;
use concurrent_futures::{task, Error, Future, ProcessPoolExecutor, Shutdown};

/// Task: appends `id` to `{dir}/ledger`, then sleeps `ms`; returns `id`.
fn logged(dir: String, id: u32, ms: u64) -> u32 {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(&dir).join("ledger"))
        .expect("open the ledger");
    // One write: two processes appending at once must not interleave.
    f.write_all(format!("{id}\n").as_bytes())
        .expect("append to the ledger");
    drop(f);
    std::thread::sleep(Duration::from_millis(ms));
    id
}

fn ledger(s: &Scratch) -> Vec<u32> {
    fs::read_to_string(s.path().join("ledger"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("a ledger line"))
        .collect()
}

/// The burst that sizes every worker's window on no-ops.
fn burst(pool: &ProcessPoolExecutor) {
    let noops: Vec<_> = (0..50u64).map(|x| pool.submit(task!(square), x)).collect();
    for (x, mut f) in (0..50u64).zip(noops) {
        assert_eq!(f.result_timeout(LONG), Ok(x * x));
    }
}

/// Task: appends `id` to `{dir}/ledger`, then waits at the gate.
fn logged_gate(dir: String, id: u32) -> u32 {
    logged(dir.clone(), id, 0);
    gate(dir);
    id
}

/// After the burst: eight gated tasks on two workers. Two run (one per
/// worker) and six wait, wherever the pool put them.
fn two_busy_six_waiting(pool: &ProcessPoolExecutor, s: &Scratch) -> Vec<Future<u32>> {
    burst(pool);
    let futures: Vec<_> = (0..8u32)
        .map(|id| pool.submit(task!(logged_gate), (s.dir(), id)))
        .collect();
    s.wait_started(2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.started(), 2, "a third task started");
    futures
}

#[test]
fn after_a_burst_short_tasks_do_not_wait_behind_a_long_one() {
    let pool = pool(2);
    short_tasks_after_a_burst_run_beside_a_long_one(&pool);
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn tasks_a_busy_pool_has_not_started_are_not_running() {
    let s = Scratch::new("not-running");
    let pool = pool(2);
    let futures = two_busy_six_waiting(&pool, &s);
    let running = futures.iter().filter(|f| f.running()).count();
    assert_eq!(running, 2, "tasks that have not started say they run");
    s.open();
    for (id, mut f) in (0..8u32).zip(futures) {
        assert_eq!(f.result_timeout(LONG), Ok(id));
    }
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn every_task_that_has_not_started_can_be_cancelled() {
    let s = Scratch::new("cancel-six");
    let pool = pool(2);
    let futures = two_busy_six_waiting(&pool, &s);
    // A cancel of a task a worker holds waits for the worker's answer.
    let (cancelled, running): (Vec<_>, Vec<_>) = common::with_timeout(LONG, move || {
        (0..8u32).zip(futures).partition(|(_, f)| f.cancel())
    });
    assert_eq!((cancelled.len(), running.len()), (6, 2));
    let mut started = ledger(&s);
    started.sort_unstable();
    let mut refused: Vec<u32> = running.iter().map(|(id, _)| *id).collect();
    refused.sort_unstable();
    assert_eq!(started, refused, "only the running tasks refuse to cancel");
    s.open();
    for (id, mut f) in running {
        assert_eq!(f.result_timeout(LONG), Ok(id));
    }
    for (_, mut f) in cancelled {
        assert_eq!(f.result_timeout(LONG), Err(Error::Cancelled));
    }
    common::with_timeout(LONG, move || drop(pool));
    assert_eq!(ledger(&s).len(), 2, "a cancelled task ran");
}

#[test]
fn shutdown_cancels_every_task_that_has_not_started() {
    let s = Scratch::new("shutdown-six");
    let pool = pool(2);
    let futures = two_busy_six_waiting(&pool, &s);
    let opener = {
        let dir = s.path().to_path_buf();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let _ = fs::write(dir.join("open"), b"");
        })
    };
    common::with_timeout(LONG, move || {
        pool.shutdown_with(Shutdown {
            wait: true,
            cancel_futures: true,
        });
    });
    opener.join().expect("the opener");
    assert_eq!(futures.iter().filter(|f| f.cancelled()).count(), 6);
    assert_eq!(ledger(&s).len(), 2, "a cancelled task ran");
    for f in futures.into_iter().filter(|f| !f.cancelled()) {
        let mut f = f;
        assert!(f.result_timeout(LONG).is_ok());
    }
}

#[test]
fn a_cancel_racing_the_start_never_runs_a_cancelled_task() {
    // Short tasks are sent ahead in windows; cancels from the back race
    // the worker taking them up. Whatever the timing, a task runs if and
    // only if its future does not say cancelled, and runs once.
    let pool = pool(1);
    // Cancels wait for the worker's answers: the rounds run under a bound.
    let cancelled_total = common::with_timeout(6 * LONG, move || {
        let total = race_rounds(&pool);
        drop(pool);
        total
    });
    assert!(cancelled_total > 0, "no cancel succeeded");
}

/// The rounds of [`a_cancel_racing_the_start_never_runs_a_cancelled_task`];
/// how many cancels succeeded.
fn race_rounds(pool: &ProcessPoolExecutor) -> usize {
    let mut cancelled_total = 0;
    for round in 0..100 {
        let s = Scratch::new(&format!("race-{round}"));
        burst(pool);
        let futures: Vec<_> = (0..24u32)
            .map(|id| pool.submit(task!(logged), (s.dir(), id, 0)))
            .collect();
        std::thread::sleep(Duration::from_micros(40 * (round % 8)));
        let mut cancelled = Vec::new();
        for (id, f) in (0..24u32).zip(&futures).rev().step_by(2) {
            if f.cancel() {
                assert!(f.cancelled());
                cancelled.push(id);
            } else {
                assert!(!f.cancelled());
            }
        }
        let mut finished = Vec::new();
        for (id, mut f) in (0..24u32).zip(futures) {
            match f.result_timeout(LONG) {
                Ok(v) => finished.push(v),
                Err(Error::Cancelled) => assert!(cancelled.contains(&id)),
                Err(e) => panic!("task {id}: {e}"),
            }
        }
        let mut ran = ledger(&s);
        ran.sort_unstable();
        finished.sort_unstable();
        assert_eq!(
            ran, finished,
            "round {round}: ran once each, cancelled never (cancelled: {cancelled:?})"
        );
        cancelled_total += cancelled.len();
    }
    cancelled_total
}

#[test]
fn a_crash_under_restart_runs_what_its_worker_held_once_elsewhere() {
    // The abort is short, so the tasks behind it are still in the
    // worker's inbox when it dies: they never ran, and run once on the
    // replacement.
    let s = Scratch::new("held-crash");
    let pool = restarting_pool(1);
    burst(&pool);
    let mut dying = pool.submit(task!(abort_now), ());
    let behind: Vec<_> = (0..20u32)
        .map(|id| pool.submit(task!(logged), (s.dir(), id, 0)))
        .collect();
    assert!(matches!(
        dying.result_timeout(LONG),
        Err(Error::WorkerDied(m)) if m.contains("SIGABRT")
    ));
    for (id, mut f) in (0..20u32).zip(behind) {
        assert_eq!(f.result_timeout(LONG), Ok(id));
    }
    let mut ran = ledger(&s);
    ran.sort_unstable();
    assert_eq!(ran, (0..20).collect::<Vec<u32>>(), "each ran exactly once");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_time_limit_in_a_map_applies_to_each_item() {
    // 200 items of 5-15 ms in automatic chunks of 25 (250 ms a chunk), a
    // limit of 100 ms: every item keeps to it, so none fails.
    let pool = pool(2);
    let items: Vec<u64> = (0..200).map(|i| 5 + i % 11).collect();
    let out: Vec<u32> = common::with_timeout(Duration::from_secs(60), move || {
        let out = pool
            .map(
                task!(sleep_ms).time_limit(Duration::from_millis(100)),
                items,
            )
            .collect::<Result<Vec<_>, _>>();
        drop(pool);
        out
    })
    .expect("no item ran past its limit");
    assert_eq!(out.len(), 200);
}

#[test]
fn a_chunk_killed_at_its_limit_says_it_was_the_chunk() {
    let pool = pool(1);
    let items = vec![10u64, 10, 60_000, 10];
    let err = common::with_timeout(LONG, move || {
        let r = pool
            .map(
                task!(sleep_ms).time_limit(Duration::from_millis(100)),
                items,
            )
            .chunksize(4)
            .collect::<Result<Vec<_>, _>>();
        drop(pool);
        r
    })
    .expect_err("the chunk ran past its limit");
    assert_eq!(
        err,
        Error::ChunkTimeLimit {
            items: 4,
            limit: Duration::from_millis(100)
        }
    );
    assert_eq!(
        err.to_string(),
        "a chunk of 4 items ran past its time limit of 400ms (100ms per item)"
    );
}
