//! Process pool conformance (docs/conformance.md P1-P15): dead workers and the
//! restart policy, chunked maps, panics across processes, how many
//! processes run and when they are replaced, terminate/kill, codec
//! failures, large arguments and stdout inside tasks. The parent's death
//! and a worker that never calls `init()` (P16, P17) are in
//! `lifecycle.rs`.
//!
//! Workers are this test binary run again as `worker_entry` (see
//! `process_common`). Processes are counted by pid and checked in `/proc`.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::io::Write;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::with_timeout;
use crate::process_common::*;
use concurrent_futures::{task, Error, ProcessPoolExecutor};

/// The message of an `Err(Error::BrokenPool)`; fails the test otherwise.
#[track_caller]
fn broken_reason<T: Debug>(r: Result<T, Error>) -> String {
    match r {
        // Under `restart_workers` a death is `WorkerDied`: the pool goes on.
        Err(Error::BrokenPool(msg) | Error::WorkerDied(msg)) => msg,
        other => panic!("expected Err(BrokenPool or WorkerDied), got {other:?}"),
    }
}

/// Runs `task!(pid)` and returns the worker's pid.
fn worker_pid(pool: &ProcessPoolExecutor) -> u32 {
    pool.submit(task!(pid), ()).result_timeout(LONG).unwrap()
}

// --- P1 -------------------------------------------------------------------

// P1
#[test]
fn sigkilled_worker_breaks_the_pool_naming_the_signal() {
    let pool = pool(1);
    let scratch = Scratch::new("p1");
    let worker = worker_pid(&pool);
    let mut running = pool.submit(task!(gate), scratch.dir());
    let pending: Vec<_> = (0..5).map(|x| pool.submit(task!(square), x)).collect();
    scratch.wait_started(1);
    send_signal(worker, libc::SIGKILL);

    let msg = broken_reason(running.result_timeout(LONG));
    assert!(msg.contains("SIGKILL"), "{msg}");
    assert!(msg.contains(&format!("worker process {worker} ")), "{msg}");
    for mut f in pending {
        let msg = broken_reason(f.result_timeout(LONG));
        assert!(msg.contains("SIGKILL"), "{msg}");
    }
    // Later work fails likewise, without starting a process.
    let msg = broken_reason(pool.submit(task!(square), 2).result_timeout(LONG));
    assert!(msg.contains("SIGKILL"), "{msg}");
    let mut it = pool.map(task!(square), 0..3u64).timeout(LONG);
    assert!(matches!(it.next(), Some(Err(Error::BrokenPool(_)))));
    assert!(it.next().is_none());
    assert!(pool.worker_pids().is_empty());
    assert!(reaped(worker), "the killed worker was not reaped");
}

// P1 (the restart policy; the default, above, breaks the pool as Python does)
#[test]
fn sigkilled_worker_is_replaced_with_restart_workers() {
    let pool = builder()
        .max_workers(1)
        .restart_workers(true)
        .build()
        .unwrap();
    let scratch = Scratch::new("p1r");
    let first = worker_pid(&pool);
    let mut victim = pool.submit(task!(gate), scratch.dir());
    let queued: Vec<_> = (0..4u64).map(|x| pool.submit(task!(square), x)).collect();
    scratch.wait_started(1);
    send_signal(first, libc::SIGKILL);

    let msg = broken_reason(victim.result_timeout(LONG));
    assert!(msg.contains("SIGKILL"), "{msg}");
    // Only what the dead worker held fails (the one pipelined behind the
    // victim at most); the rest runs on the replacement.
    let mut failed = 0;
    for (x, mut f) in (0..4u64).zip(queued) {
        match f.result_timeout(LONG) {
            Ok(v) => assert_eq!(v, x * x),
            Err(Error::BrokenPool(_)) => failed += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(failed <= 1, "{failed} queued futures failed");
    let second = worker_pid(&pool);
    assert_ne!(second, first);
    assert_eq!(pool.worker_pids(), [second]);
    assert!(reaped(first), "the killed worker was not reaped");
}

// --- P2, P3, P4 -----------------------------------------------------------

// P2
#[test]
fn map_with_chunksize_6_40_50_gives_correct_results() {
    let pool = pool(2);
    let expected: Vec<u64> = (0..40u64).map(|i| pow(i, i as u32)).collect();
    for chunksize in [6, 40, 50] {
        let got: Vec<u64> = pool
            .map(task!(pow), (0..40u64).map(|i| (i, i as u32)))
            .chunksize(chunksize)
            .timeout(LONG)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, expected, "chunksize {chunksize}");
    }
}

// Issue 9: the input is pulled in the parent, so it may borrow.
#[test]
fn map_input_may_borrow_from_the_caller() {
    let pool = pool(2);
    let xs: Vec<u64> = (1..=5).collect();
    let got: Vec<u64> = pool
        .map(task!(square), xs.iter().copied())
        .timeout(LONG)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, [1, 4, 9, 16, 25]);
    assert_eq!(xs.len(), 5);
    with_timeout(LONG, move || drop(pool));
}

// P2
#[test]
fn map_refuses_chunksize_0() {
    let pool = pool(1);
    let mut it = pool.map(task!(square), 0..4u64).chunksize(0);
    assert!(matches!(it.next(), Some(Err(Error::InvalidArgument(_)))));
    assert!(it.next().is_none());
    assert!(pool.worker_pids().is_empty(), "nothing should have run");
}

/// Panics on 3.
fn boom(x: u32) -> u32 {
    if x == 3 {
        panic!("boom at {x}");
    }
    x
}

// Issue 9: a panic carries a backtrace when the user asked for one, and
// only then.
#[test]
fn worker_panic_carries_a_backtrace_only_when_asked_for() {
    for (setting, wanted) in [("1", true), ("0", false)] {
        let pool = builder()
            .max_workers(1)
            .env("RUST_BACKTRACE", setting)
            .env("RUST_LIB_BACKTRACE", setting)
            .build()
            .unwrap();
        let err = pool
            .submit(task!(boom), 3)
            .result_timeout(LONG)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Panicked { message, .. } if message == "boom at 3"),
            "{err:?}"
        );
        match err.backtrace() {
            Some(bt) if wanted => assert!(bt.contains("boom"), "the frames name the task: {bt}"),
            None if !wanted => {}
            other => panic!("RUST_BACKTRACE={setting}: got backtrace {other:?}"),
        }
        with_timeout(LONG, move || drop(pool));
    }
}

// P3
#[test]
fn worker_panic_keeps_its_message_and_location() {
    let pool = pool(1);
    let worker = worker_pid(&pool);
    match pool.submit(task!(boom), 3).result_timeout(LONG) {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "boom at 3");
            let at = location.expect("a location");
            let line = at
                .strip_prefix(concat!(file!(), ":"))
                .unwrap_or_else(|| panic!("location {at} is not in {}", file!()));
            assert!(line.split(':').all(|n| n.parse::<u32>().is_ok()), "{at}");
        }
        other => panic!("expected Err(Panicked), got {other:?}"),
    }
    // In a map the panic comes at its position, and ends the iteration.
    let got: Vec<_> = pool.map(task!(boom), 0..6).chunksize(1).collect();
    assert_eq!(got[..3], [Ok(0), Ok(1), Ok(2)]);
    assert!(
        matches!(&got[3], Err(Error::Panicked { message, .. }) if message == "boom at 3"),
        "{got:?}"
    );
    assert_eq!(got.len(), 4);
    // A panic never kills the worker.
    assert_eq!(worker_pid(&pool), worker);
}

// P4
#[test]
fn arguments_are_dropped_in_the_worker_after_the_job() {
    let pool = pool(1);
    let key = fresh_key();
    // Alive in the worker while the job runs, gone after it.
    assert_eq!(
        pool.submit(task!(hold), Tracked::new(key))
            .result_timeout(LONG),
        Ok(1)
    );
    assert_eq!(pool.submit(task!(live), key).result_timeout(LONG), Ok(0));
    // Likewise for the items of a chunked map.
    let held: Vec<i64> = pool
        .map(task!(hold), (0..6).map(move |_| Tracked::new(key)))
        .chunksize(3)
        .timeout(LONG)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(held.len(), 6);
    assert!(held.iter().all(|&n| n >= 1), "{held:?}");
    assert_eq!(pool.submit(task!(live), key).result_timeout(LONG), Ok(0));
    // This process's copies went once they were sent.
    assert_eq!(live(key), 0);
}

// --- P5, P6, P7, P8: how many processes --------------------------------

// P5
#[test]
fn blocking_jobs_15_times_the_workers_start_exactly_max_workers_processes() {
    let workers = 2;
    let pool = pool(workers);
    let scratch = Scratch::new("p5");
    let futures: Vec<_> = (0..15 * workers)
        .map(|_| pool.submit(task!(gate), scratch.dir()))
        .collect();
    scratch.wait_started(workers);
    assert_eq!(pool.worker_pids().len(), workers);
    scratch.open();
    let used: BTreeSet<u32> = futures
        .into_iter()
        .map(|mut f| f.result_timeout(LONG).unwrap())
        .collect();
    assert_eq!(used.len(), workers, "{used:?}");
    let current: BTreeSet<u32> = pool.worker_pids().into_iter().collect();
    assert_eq!(current, used);
}

// P6
#[test]
fn sequential_jobs_reuse_one_process() {
    let pool = pool(4);
    let pids: Vec<u32> = (0..300).map(|_| worker_pid(&pool)).collect();
    assert!(pids.iter().all(|&p| p == pids[0]), "{pids:?}");
    assert_eq!(pool.worker_pids(), [pids[0]]);
}

// P7
#[test]
fn max_tasks_per_child_3_gives_job_4_a_new_process() {
    let pool = builder()
        .max_workers(1)
        .max_tasks_per_child(3)
        .build()
        .unwrap();
    let first = worker_pid(&pool);
    assert_eq!(worker_pid(&pool), first);
    assert_eq!(pool.worker_pids(), [first]);
    assert_eq!(worker_pid(&pool), first);
    let second = worker_pid(&pool);
    assert_ne!(second, first);
    eventually("the retired worker is reaped", || reaped(first));
    eventually("only the new worker is left", || {
        pool.worker_pids() == [second]
    });
}

/// The worker's pid and `x * x`.
fn pid_and_square(x: u64) -> (u32, u64) {
    (std::process::id(), x * x)
}

// P8
#[test]
fn max_tasks_per_child_1_with_3_workers_finishes_6_jobs_then_shuts_down() {
    let pool = builder()
        .max_workers(3)
        .max_tasks_per_child(1)
        .build()
        .unwrap();
    let futures: Vec<_> = (0..6u64)
        .map(|x| pool.submit(task!(pid_and_square), x))
        .collect();
    let results = with_timeout(LONG, move || {
        pool.shutdown();
        assert!(pool.worker_pids().is_empty());
        futures
            .into_iter()
            .map(|f| {
                assert!(f.done());
                f.result()
            })
            .collect::<Vec<_>>()
    });
    let mut pids = BTreeSet::new();
    for (x, r) in (0..6u64).zip(results) {
        let (pid, square) = r.unwrap();
        assert_eq!(square, x * x);
        pids.insert(pid);
        assert!(reaped(pid));
    }
    assert_eq!(pids.len(), 6, "each process runs one job: {pids:?}");
}

// --- P9, P10: terminate_workers and kill_workers ------------------------

/// Waits at the gate in `dir`, then marks `{dir}/finished`.
fn gate_then_finish(dir: String) -> u32 {
    let pid = gate(dir.clone());
    std::fs::write(Path::new(&dir).join("finished"), b"").unwrap();
    pid
}

fn stop_workers_during_a_running_task(kill: bool) {
    let pool = pool(1);
    let scratch = Scratch::new(if kill { "p9k" } else { "p9t" });
    let mut running = pool.submit(task!(gate_then_finish), scratch.dir());
    let behind: Vec<_> = (0..4).map(|_| pool.submit(task!(sleep_ms), 0)).collect();
    scratch.wait_started(1);
    let worker = pool.worker_pids()[0];
    let started = Instant::now();
    if kill {
        pool.kill_workers();
    } else {
        pool.terminate_workers();
    }
    assert!(started.elapsed() < LONG);
    // It returns once the worker is reaped.
    assert!(reaped(worker), "the worker was not reaped");
    let msg = broken_reason(running.result_timeout(LONG));
    let signal = if kill { "SIGKILL" } else { "SIGTERM" };
    assert!(msg.contains(signal), "{msg}");
    // The task never finishes, even with its gate open.
    scratch.open();
    thread::sleep(Duration::from_millis(50));
    assert_eq!(scratch.count("finished"), 0);
    // The tasks behind it were cancelled or (if already sent) failed.
    for f in behind {
        assert!(f.done());
        assert!(
            f.cancelled() || matches!(f.exception(), Some(Error::BrokenPool(_))),
            "{f:?}"
        );
    }
    assert_eq!(
        pool.submit(task!(square), 3).result_timeout(LONG),
        Err(Error::Shutdown)
    );
    assert!(pool.worker_pids().is_empty());
}

// P9
#[test]
fn terminate_workers_during_a_running_task_fails_it_and_refuses_later_submits() {
    stop_workers_during_a_running_task(false);
}

// P9
#[test]
fn kill_workers_during_a_running_task_fails_it_and_refuses_later_submits() {
    stop_workers_during_a_running_task(true);
}

// P10
#[test]
fn terminate_and_kill_before_any_worker_started_do_nothing() {
    let pool = pool(2);
    with_timeout(LONG, move || {
        pool.terminate_workers();
        pool.kill_workers();
        pool.terminate_workers();
        assert!(pool.worker_pids().is_empty());
        // Like Python's, they shut the pool down.
        assert_eq!(pool.submit(task!(square), 2).result(), Err(Error::Shutdown));
    });
}

// P10
#[test]
fn terminate_and_kill_on_a_broken_pool_do_nothing() {
    let pool = pool(1);
    let why = broken_reason(pool.submit(task!(exit_with), 5).result_timeout(LONG));
    with_timeout(LONG, move || {
        pool.terminate_workers();
        pool.kill_workers();
        assert!(pool.worker_pids().is_empty());
        // Shut down now, but broken first, as in Python: the submit hears
        // why the pool broke (its worker died under submit #0).
        let why = why.replacen(
            "while running a task",
            "while running another task (submit #0)",
            1,
        );
        assert_eq!(
            pool.submit(task!(square), 2).result(),
            Err(Error::BrokenPool(why))
        );
    });
}

// --- P11, P12, P13, P14, P15: deaths, codec, large data, stdout ---------

// P11
#[test]
fn process_exit_inside_a_task_names_the_exit_code() {
    let pool = pool(1);
    let worker = worker_pid(&pool);
    let msg = broken_reason(pool.submit(task!(exit_with), 7).result_timeout(LONG));
    assert!(
        msg.contains(&format!("worker process {worker} exited with code 7")),
        "{msg}"
    );
    assert!(reaped(worker));
    let later = broken_reason(pool.submit(task!(square), 2).result_timeout(LONG));
    assert!(later.contains("exited with code 7"), "{later}");
}

// P12
#[test]
fn argument_that_fails_to_serialize_fails_only_its_future() {
    let pool = pool(1);
    let ok = pool.submit(
        task!(picky_value),
        Picky {
            fail: false,
            value: 1,
        },
    );
    let bad = pool.submit(
        task!(picky_value),
        Picky {
            fail: true,
            value: 2,
        },
    );
    assert!(bad.done(), "the codec error is known at submission");
    match bad.result() {
        // Issue 9: the impl's own message is kept, not postcard's
        // "Serde Serialization Error".
        Err(Error::Codec(msg)) => assert_eq!(
            msg,
            "cannot serialize process::process_common::Picky: picky refuses to be serialized"
        ),
        other => panic!("expected Err(Codec), got {other:?}"),
    }
    let mut ok = ok;
    assert_eq!(ok.result_timeout(LONG), Ok(1));
    // In a map it comes at its position.
    let items = (0..4).map(|v| Picky {
        fail: v == 2,
        value: v,
    });
    let got: Vec<_> = pool.map(task!(picky_value), items).chunksize(1).collect();
    assert_eq!(got[..2], [Ok(0), Ok(1)]);
    assert!(matches!(got[2], Err(Error::Codec(_))), "{got:?}");
    // The pool keeps working.
    let mut again = pool.submit(
        task!(picky_value),
        Picky {
            fail: false,
            value: 3,
        },
    );
    assert_eq!(again.result_timeout(LONG), Ok(3));
}

// P13
#[test]
fn result_that_fails_to_serialize_fails_only_its_future() {
    let pool = pool(1);
    let worker = worker_pid(&pool);
    // Pipelined between good ones, so a damaged frame would show.
    let before = pool.submit(task!(picky_result), false);
    let bad = pool.submit(task!(picky_result), true);
    let after = pool.submit(task!(picky_result), false);
    let good = Picky {
        fail: false,
        value: 7,
    };
    for (i, mut f) in [before, bad, after].into_iter().enumerate() {
        match (i, f.result_timeout(LONG)) {
            (1, Err(Error::Codec(msg))) => {
                assert!(msg.ends_with(": picky refuses to be serialized"), "{msg}")
            }
            (1, other) => panic!("expected Err(Codec), got {other:?}"),
            (_, r) => assert_eq!(r, Ok(good.clone())),
        }
    }
    assert_eq!(worker_pid(&pool), worker, "the worker survives");
}

const HUNDRED_MB: usize = 100 << 20;

// P14
#[test]
fn worker_killed_while_a_100_mb_argument_is_in_the_pipe_breaks_the_pool() {
    let pool = pool(1);
    let worker = worker_pid(&pool);
    // A stopped worker reads nothing: the argument stays in the pipe.
    send_signal(worker, libc::SIGSTOP);
    let mut fut = pool.submit(task!(bytes_len), Bytes(vec![7; HUNDRED_MB]));
    eventually("the argument is being written", || fut.running());
    thread::sleep(Duration::from_millis(20));
    send_signal(worker, libc::SIGKILL);
    let msg = broken_reason(fut.result_timeout(LONG));
    assert!(msg.contains("SIGKILL"), "{msg}");
    assert!(reaped(worker));
}

// P14
#[test]
fn worker_exiting_on_a_100_mb_argument_breaks_the_pool() {
    let pool = pool(1);
    let mut fut = pool.submit(task!(bytes_then_exit), Bytes(vec![1; HUNDRED_MB]));
    let msg = broken_reason(fut.result_timeout(LONG));
    assert!(msg.contains("exited with code 9"), "{msg}");
}

/// Prints many lines to stdout (some look like frame headers), ends
/// without a newline, and returns `n * 2`.
fn chatty(n: u32) -> u32 {
    for i in 0..n {
        println!("stdout noise {i}: ffff\u{7f}CFWRK1 not a frame");
    }
    print!("and a line without its end");
    std::io::stdout().flush().unwrap();
    n * 2
}

// P15
#[test]
fn task_printing_to_stdout_does_not_corrupt_the_protocol() {
    let pool = pool(1);
    let worker = worker_pid(&pool);
    let noisy = pool.submit(task!(chatty), 500);
    let quiet: Vec<_> = (0..20u64).map(|x| pool.submit(task!(square), x)).collect();
    let mut noisy = noisy;
    assert_eq!(noisy.result_timeout(LONG), Ok(1000));
    for (x, mut f) in (0..20u64).zip(quiet) {
        assert_eq!(f.result_timeout(LONG), Ok(x * x));
    }
    assert_eq!(worker_pid(&pool), worker);
}

// --- Issue 9: a worker can be told from its parent in `ps` ----------------

/// The worker's `comm` (what `ps -e` and `top` show) and its `argv[0]`
/// (what `ps aux` shows).
fn names() -> (String, String) {
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let arg0 = std::env::args().next().unwrap_or_default();
    (comm.trim_end().to_string(), arg0)
}

#[test]
fn workers_are_named_so_ps_tells_them_from_the_parent() {
    let pool = pool(1);
    let (comm, arg0) = pool.submit(task!(names), ()).result_timeout(LONG).unwrap();
    let (parent_comm, parent_arg0) = names();
    assert_ne!(comm, "exe");
    assert_ne!(comm, parent_comm);
    assert!(comm.ends_with("-worker"), "{comm}");
    assert!(
        parent_comm.starts_with(comm.trim_end_matches("-worker")),
        "{parent_comm} vs {comm}"
    );
    assert_eq!(arg0, format!("{parent_arg0} (concurrent-futures worker)"));
    with_timeout(LONG, move || drop(pool));
}
