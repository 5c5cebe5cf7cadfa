//! Late binding: a task stays in the pool's queue until a worker has room,
//! so long tasks spread over the workers (starting ones included) and
//! short ones never wait behind a long one; a crash costs only the task
//! that ran, and no task runs twice.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::common;
use crate::process_common::*;
use concurrent_futures::{task, Error, ProcessPoolExecutor};

/// Task: marks `{dir}/here-{pid}`, then waits (at most [`LONG`]) until `n`
/// such marks exist; returns its pid, or 0 if the others never came. Two
/// of these finish only if they run at the same time, in two processes.
fn rendezvous(dir: String, n: usize) -> u32 {
    let me = std::process::id();
    let _ = fs::write(Path::new(&dir).join(format!("here-{me}")), b"");
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        let here = fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("here-"))
                    .count()
            })
            .unwrap_or(0);
        if here >= n {
            return me;
        }
        thread::sleep(Duration::from_millis(2));
    }
    0
}

/// Task: appends `id` as a line to `file`; returns `id`.
fn append(file: String, id: u32) -> u32 {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .expect("open the ledger");
    // One write: two processes appending at once must not interleave.
    f.write_all(format!("{id}\n").as_bytes())
        .expect("append to the ledger");
    id
}

/// Task: appends `id` to `file`, then waits at `{dir}` until the gate
/// opens or a death command arrives: a task that surely started.
fn append_then_gate(file: String, dir: String, id: u32) -> u32 {
    append(file, id);
    gate(dir)
}

/// Task: aborts the worker once `{dir}/open` exists.
fn abort_at_gate(dir: String) -> u32 {
    gate(dir);
    std::process::abort()
}

/// The pid of the one `gate` task started in `s`, once it started.
fn started_pid(s: &Scratch) -> u32 {
    s.wait_started(1);
    s.pids("started-")[0]
}

/// The ids appended to `file`, one per line.
fn ledger(file: &Path) -> Vec<u32> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("an id"))
        .collect()
}

#[test]
fn two_long_tasks_on_a_fresh_pool_run_on_two_processes_at_once() {
    for round in 0..20 {
        let s = Scratch::new("pair");
        let pool = pool(2);
        let mut a = pool.submit(task!(rendezvous), (s.dir(), 2));
        let mut b = pool.submit(task!(rendezvous), (s.dir(), 2));
        let (a, b) = match (a.result_timeout(LONG), b.result_timeout(LONG)) {
            (Ok(a), Ok(b)) => (a, b),
            other => panic!("round {round}: {other:?}"),
        };
        assert!(a != 0 && b != 0, "round {round}: the two never met");
        assert_ne!(a, b, "round {round}: both ran in one process");
        common::with_timeout(LONG, move || drop(pool));
    }
}

#[test]
fn short_tasks_are_not_stuck_behind_a_long_one() {
    let s = Scratch::new("shorts");
    let pool = pool(2);
    // Both workers are up and have run tasks of 5 ms (long enough that
    // none is pipelined behind another), as in the scenario. A
    // worker whose tasks were all tiny may pipeline a task behind the one
    // it runs before that one shows it is long: that is what pipelining
    // short tasks costs, and a worker stops it once its task has run long.
    let warm: Vec<_> = (0..2)
        .map(|_| pool.submit(task!(rendezvous), (s.dir(), 2)))
        .collect();
    for mut f in warm {
        assert_ne!(f.result_timeout(LONG), Ok(0));
    }
    let warm: Vec<_> = (0..4).map(|_| pool.submit(task!(sleep_ms), 5)).collect();
    for mut f in warm {
        assert!(f.result_timeout(LONG).is_ok());
    }
    let mut long = pool.submit(task!(gate), s.dir());
    s.wait_started(1);
    let shorts: Vec<_> = (0..10u64).map(|x| pool.submit(task!(square), x)).collect();
    for (x, mut f) in (0..10u64).zip(shorts) {
        assert_eq!(f.result_timeout(LONG), Ok(x * x));
    }
    // All ten finished while the long task still ran.
    assert!(!long.done());
    s.open();
    assert!(long.result_timeout(LONG).is_ok());
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_starting_worker_takes_queued_work() {
    // One worker busy, the second still starting: the next task waits
    // for the second, not in the first one's pipe.
    let s = Scratch::new("starting");
    let pool = pool(2);
    let mut busy = pool.submit(task!(gate), s.dir());
    let mut next = pool.submit(task!(pid), ());
    let busy_pid = started_pid(&s);
    let next_pid = next.result_timeout(LONG).expect("the second worker ran it");
    assert_ne!(next_pid, busy_pid);
    s.open();
    assert_eq!(busy.result_timeout(LONG), Ok(busy_pid));
    common::with_timeout(LONG, move || drop(pool));
}

/// Quick tasks first, so the worker's window grows and the gated task is
/// sent with the appends behind it in one batch; returns the futures.
fn pipelined(
    pool: &ProcessPoolExecutor,
    s: &Scratch,
    ledger_file: &str,
) -> (
    concurrent_futures::Future<u32>,
    Vec<concurrent_futures::Future<u32>>,
) {
    let quick: Vec<_> = (0..300u64).map(|x| pool.submit(task!(square), x)).collect();
    let dying = pool.submit(task!(abort_at_gate), s.dir());
    let behind: Vec<_> = (0..20u32)
        .map(|id| pool.submit(task!(append), (ledger_file.to_string(), id)))
        .collect();
    for (x, mut f) in (0..300u64).zip(quick) {
        assert_eq!(f.result_timeout(LONG), Ok(x * x));
    }
    s.wait_started(1);
    (dying, behind)
}

#[test]
fn a_crash_under_restart_fails_only_the_running_task_and_the_rest_run_once() {
    let s = Scratch::new("crash-restart");
    let ledger_file = s.path().join("ledger");
    let pool = restarting_pool(1);
    let (mut dying, behind) = pipelined(&pool, &s, &ledger_file.to_string_lossy());
    // The appends wait behind the gated task (sent ahead, then recalled
    // to the queue once it ran long): none has started, and none says it
    // runs.
    assert!(behind.iter().all(|f| !f.running()));
    assert!(ledger(&ledger_file).is_empty());
    s.open();
    assert!(matches!(
        dying.result_timeout(LONG),
        Err(Error::WorkerDied(m)) if m.contains("SIGABRT") && m.contains("while running a task")
    ));
    for (id, mut f) in (0..20u32).zip(behind) {
        assert_eq!(f.result_timeout(LONG), Ok(id));
    }
    let mut ran = ledger(&ledger_file);
    ran.sort_unstable();
    assert_eq!(ran, (0..20).collect::<Vec<u32>>(), "each ran exactly once");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_crash_under_the_default_policy_fails_every_future_and_runs_nothing_more() {
    let s = Scratch::new("crash-break");
    let ledger_file = s.path().join("ledger");
    let pool = pool(1);
    let (mut dying, behind) = pipelined(&pool, &s, &ledger_file.to_string_lossy());
    s.open();
    let Err(Error::BrokenPool(msg)) = dying.result_timeout(LONG) else {
        panic!("the aborting task did not break the pool");
    };
    // The tasks behind it never ran: the worker died under submit #300.
    let others = msg.replacen(
        "while running a task",
        "while running another task (submit #300)",
        1,
    );
    assert_ne!(others, msg);
    for mut f in behind {
        assert_eq!(
            f.result_timeout(LONG),
            Err(Error::BrokenPool(others.clone()))
        );
    }
    assert!(
        ledger(&ledger_file).is_empty(),
        "a task behind the crash ran"
    );
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_started_task_never_runs_twice_when_its_worker_dies() {
    // The task appends, then its worker is killed mid-task; under
    // restart_workers it fails and is not run again elsewhere.
    let s = Scratch::new("once");
    let ledger_file = s.path().join("ledger");
    let pool = restarting_pool(2);
    let mut victim = pool.submit(
        task!(append_then_gate),
        (ledger_file.to_string_lossy().into_owned(), s.dir(), 7),
    );
    let pid = started_pid(&s);
    send_signal(pid, libc::SIGKILL);
    assert!(matches!(
        victim.result_timeout(LONG),
        Err(Error::WorkerDied(m)) if m.contains("SIGKILL")
    ));
    // The pool goes on, and the ledger has the one line.
    assert_eq!(pool.submit(task!(square), 9).result_timeout(LONG), Ok(81));
    assert_eq!(ledger(&ledger_file), [7]);
    common::with_timeout(LONG, move || drop(pool));
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
