//! Fault matrix, part 1: a worker process dies.
//!
//! Four deaths (SIGKILL, a real segmentation fault, `abort()`, `exit(7)`)
//! at five moments (idle; running a task; running the initializer; while the
//! pool is still writing a 100 MB argument into its pipe; while the worker
//! is writing a large result), each under the default policy (the pool
//! breaks: every pending future and every later submit fails with
//! `BrokenPool` naming the dead worker and how it died) and under
//! `restart_workers(true)` (only the dead worker's futures fail; later work
//! runs on a new process). Every row asserts the outcome of every future it
//! submitted, waits with a deadline, and checks that no worker process is
//! left (each pid is reaped).
//!
//! Workers are this test binary run again as `worker_entry`. Deaths are
//! commanded through a scratch directory (see `faults_common`), so they
//! happen inside the worker at a moment the test chose; SIGKILL is sent by
//! the test itself where it can be.

use crate::faults_common::*;
use concurrent_futures::{task, ProcessPoolExecutor};
use serde_bytes::ByteBuf;

/// What the pool does when a worker dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// The default: the pool breaks, as in Python.
    Break,
    /// `restart_workers(true)`.
    Restart,
}

fn pool(workers: usize, policy: Policy) -> ProcessPoolExecutor {
    builder()
        .max_workers(workers)
        .restart_workers(policy == Policy::Restart)
        .build()
        .expect("build a process pool")
}

/// SIGKILL and SIGSEGV signals come from the test; the other deaths by
/// command, inside.
fn inflict(s: &Scratch, pid: u32, death: Death) {
    match death {
        Death::Kill => send_signal(pid, libc::SIGKILL),
        Death::SegvSignal => segv_until_ended(pid),
        _ => s.command(pid, death),
    }
}

/// After a death under the default policy: later submits fail with the
/// same message, no worker is left.
#[track_caller]
fn assert_stays_broken(pool: &ProcessPoolExecutor, msg: &str, pids: &[u32]) {
    assert_eq!(broken(&mut pool.submit(task!(square), 9), &[]), msg);
    let mut later = pool.map(task!(square), 0..3u64).timeout(LONG);
    assert!(
        matches!(later.next(), Some(Err(concurrent_futures::Error::BrokenPool(m))) if m == msg)
    );
    assert!(later.next().is_none());
    eventually("no live workers", || pool.worker_pids().is_empty());
    assert_reaped(pids);
}

/// After a death under `restart_workers(true)`: later work runs on a
/// process that is not `dead`; once the pool is dropped none of `pids` (nor
/// any worker started since) is left.
#[track_caller]
fn assert_restarted(pool: ProcessPoolExecutor, dead: u32, mut pids: Vec<u32>) {
    let later = value(&mut pool.submit(task!(pid), ()));
    assert_ne!(later, dead, "the dead worker served a task");
    assert!(!pool.worker_pids().contains(&dead));
    assert_eq!(value(&mut pool.submit(task!(square), 12)), 144);
    pids.push(later);
    pids.extend(pool.worker_pids());
    drop(pool);
    assert_reaped(&pids);
}

// ---------------------------------------------------------------------------
// The five moments.

/// The worker finished its task and waits for the next when it dies.
fn idle(death: Death, policy: Policy) {
    let s = Scratch::new("idle");
    let pool = pool(1, policy);
    let p = value(&mut pool.submit(task!(arm), s.dir()));
    assert_eq!(pool.worker_pids(), [p]);
    inflict(&s, p, death);
    eventually("the idle worker's death is noticed", || {
        pool.worker_pids().is_empty()
    });
    assert_reaped(&[p]);
    match policy {
        Policy::Break => {
            let msg = broken(
                &mut pool.submit(task!(square), 3),
                &[&names(p), death.words()],
            );
            assert!(!msg.contains("while running"), "{msg}");
            assert_stays_broken(&pool, &msg, &[p]);
        }
        Policy::Restart => {
            let fresh = value(&mut pool.submit(task!(pid), ()));
            assert_ne!(fresh, p);
            assert_restarted(pool, p, vec![p, fresh]);
        }
    }
}

/// Two workers, each running one task, two more of those and three
/// others queued; one worker dies inside its running task. The queued
/// tasks never entered a worker's pipe (late binding), so under
/// `restart_workers` only the running task fails.
fn running(death: Death, policy: Policy) {
    let s = Scratch::new("run");
    let pool = pool(2, policy);
    let mut blocked: Vec<_> = (0..4).map(|_| pool.submit(task!(block), s.dir())).collect();
    let both = s.wait_pids("started-", 2);
    let (victim, other) = (both[0], both[1]);
    let mut queued: Vec<_> = (0..3u64).map(|x| pool.submit(task!(square), x)).collect();
    // Each worker holds the one task it runs; the rest wait in the pool.
    assert_eq!(blocked.iter().filter(|f| f.running()).count(), 2);
    assert!(queued.iter().all(|f| !f.running()));
    inflict(&s, victim, death);
    let words = [
        names(victim),
        death.words().into(),
        "while running a task".into(),
    ];
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match policy {
        Policy::Break => {
            // The task that ran in the victim says it died there. The
            // other worker is stopped; its futures, like the queued ones,
            // say the victim died under another task, and name it.
            let msgs: Vec<String> = blocked.iter_mut().map(|f| broken(f, &[])).collect();
            let ran: Vec<usize> = (0..msgs.len())
                .filter(|&i| words.iter().all(|w| msgs[i].contains(w)))
                .collect();
            assert_eq!(ran.len(), 1, "{words:?} not in exactly one of {msgs:?}");
            let others = others(&msgs[ran[0]], &format!("submit #{}", ran[0]));
            for (i, msg) in msgs.iter().enumerate() {
                if i != ran[0] {
                    assert_eq!(*msg, others);
                }
            }
            for f in &mut queued {
                assert_eq!(broken(f, &[]), others);
            }
            assert_stays_broken(&pool, &others, &[victim, other]);
        }
        Policy::Restart => {
            // The replacement takes a queued task; once the gate opens
            // every task but the one that ran in the victim succeeds.
            let started = s.wait_pids("started-", 3);
            assert_eq!(started.len(), 3, "{started:?}");
            s.open();
            for (x, f) in (0..3u64).zip(&mut queued) {
                assert_eq!(value(f), x * x);
            }
            let (mut failed, mut ok) = (Vec::new(), Vec::new());
            for f in &mut blocked {
                match f.result_timeout(LONG) {
                    Ok(pid) => ok.push(pid),
                    Err(concurrent_futures::Error::WorkerDied(msg)) => failed.push(msg),
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            assert_eq!((failed.len(), ok.len()), (1, 3), "{failed:?}");
            assert!(!ok.contains(&victim), "{ok:?}");
            for w in &words {
                assert!(failed[0].contains(w), "{w:?} missing from {:?}", failed[0]);
            }
            let mut pids = vec![victim, other];
            pids.extend(ok);
            assert_restarted(pool, victim, pids);
        }
    }
}

/// The worker dies in its initializer, with three tasks submitted (two of
/// them already in its pipe). Its replacement would run the same
/// initializer, so the pool breaks under either policy.
fn initializer(death: Death, policy: Policy) {
    let s = Scratch::new("init");
    let pool = builder()
        .max_workers(1)
        .restart_workers(policy == Policy::Restart)
        .initializer(task!(init_wait), s.dir())
        .build()
        .expect("build a process pool");
    let mut futs: Vec<_> = (0..3u64).map(|x| pool.submit(task!(square), x)).collect();
    let p = s.wait_pids("init-", 1)[0];
    inflict(&s, p, death);
    let msg = broken(
        &mut futs[0],
        &["the initializer failed", &names(p), death.words()],
    );
    for f in &mut futs[1..] {
        assert_eq!(broken(f, &[]), msg);
    }
    assert_stays_broken(&pool, &msg, &[p]);
}

/// An initializer that crashes in every worker, under `restart_workers`:
/// the first death breaks the pool instead of starting replacements that
/// crash in turn (each one would, and no task would ever run).
#[test]
fn initializer_crashing_in_every_worker_breaks_the_pool_despite_restart() {
    let pool = builder()
        .max_workers(2)
        .restart_workers(true)
        .initializer(task!(init_die), Death::Abort)
        .build()
        .expect("build a process pool");
    let mut futs: Vec<_> = (0..4u64).map(|x| pool.submit(task!(square), x)).collect();
    let mut pids = pool.worker_pids();
    let msg = broken(
        &mut futs[0],
        &[
            "the initializer failed: worker process",
            Death::Abort.words(),
        ],
    );
    for f in &mut futs[1..] {
        assert_eq!(broken(f, &[]), msg);
    }
    pids.extend(pool.worker_pids());
    assert_stays_broken(&pool, &msg, &pids);
}

/// The pool is writing a 100 MB argument into the worker's pipe when the
/// worker dies: the worker, idle with a death armed, is stopped (SIGSTOP)
/// so the pipe stays full and the pool's writer blocked mid-frame; then it
/// is killed, or continued with its death commanded (its armed thread
/// obeys within a millisecond, long before it could read 100 MB).
fn big_argument(death: Death, policy: Policy) {
    let _apart = memory_rows();
    let s = Scratch::new("big");
    let pool = pool(1, policy);
    let p = value(&mut pool.submit(task!(arm), s.dir()));
    send_signal(p, libc::SIGSTOP);
    eventually("the worker stops", || proc_state(p) == Some('T'));
    let mut big = pool.submit(task!(bytes_len), ByteBuf::from(vec![7u8; 100 << 20]));
    let mut queued: Vec<_> = (0..2u64).map(|x| pool.submit(task!(square), x)).collect();
    // The pipe holds 1 MiB: once it is full, the pool's writer is blocked
    // inside the big frame.
    eventually("the pool writes the big argument", || {
        pipe_backlog(p) >= 512 << 10
    });
    assert!(big.running() && !big.done());
    // The others wait in the pool, not behind the big one in the pipe.
    assert!(queued.iter().all(|f| !f.running()));
    match death {
        Death::Kill => send_signal(p, libc::SIGKILL),
        _ => {
            s.command(p, death);
            send_signal(p, libc::SIGCONT);
        }
    }
    let msg = broken(
        &mut big,
        &[&names(p), death.words(), "while running a task"],
    );
    match policy {
        Policy::Break => {
            // The others never ran: the worker died under submit #1.
            let others = others(&msg, "submit #1");
            for f in &mut queued {
                assert_eq!(broken(f, &[]), others);
            }
            assert_stays_broken(&pool, &others, &[p]);
        }
        Policy::Restart => {
            for (x, f) in (0..2u64).zip(&mut queued) {
                assert_eq!(value(f), x * x);
            }
            assert_restarted(pool, p, vec![p]);
        }
    }
}

/// The worker dies while writing a 64 MiB result. The pool's reader is held
/// in a done-callback of the previous task (callbacks run in the completing
/// thread), so the result cannot drain and the worker's write is surely in
/// progress when the command arrives.
fn writing_result(death: Death, policy: Policy) {
    let _apart = memory_rows();
    let gate = Scratch::new("result-gate");
    let s = Scratch::new("result");
    let pool = pool(1, policy);
    let mut first = pool.submit(task!(block), gate.dir());
    let (entered_tx, entered) = crossbeam_channel::bounded(1);
    let (release, release_rx) = crossbeam_channel::bounded::<()>(1);
    first.add_done_callback(move |_| {
        let _ = entered_tx.send(());
        let _ = release_rx.recv_timeout(LONG);
    });
    let mut big = pool.submit(task!(big_result), (s.dir(), 64usize << 20));
    let mut queued: Vec<_> = (0..3u64).map(|x| pool.submit(task!(square), x)).collect();
    let p = gate.wait_pids("started-", 1)[0];
    gate.open();
    entered.recv_timeout(LONG).expect("the done-callback ran");
    s.wait_pids("big-", 1);
    // The worker's writer fills the 1 MiB pipe and blocks.
    eventually("the worker writes its result", || {
        pipe_backlog(p) >= 512 << 10
    });
    inflict(&s, p, death);
    // Nobody reaps it while the reader is held: it stays a zombie.
    eventually("the worker dies", || proc_state(p) == Some('Z'));
    release.send(()).expect("release the reader");
    assert_eq!(value(&mut first), p);
    // The queued tasks never left the pool: the worker held only `big`.
    let msg = broken(
        &mut big,
        &[
            &names(p),
            death.words(),
            "the stream ended inside a frame",
            "while running a task",
        ],
    );
    match policy {
        Policy::Break => {
            // The others never ran: the worker died under submit #1.
            let others = others(&msg, "submit #1");
            for f in &mut queued {
                assert_eq!(broken(f, &[]), others);
            }
            assert_stays_broken(&pool, &others, &[p]);
        }
        Policy::Restart => {
            for (x, f) in (0..3u64).zip(&mut queued) {
                assert_eq!(value(f), x * x);
            }
            assert_restarted(pool, p, vec![p]);
        }
    }
}

// ---------------------------------------------------------------------------
// The rows.

macro_rules! rows {
    ($($name:ident: $moment:ident($death:ident, $policy:ident);)*) => {
        $(
            #[test]
            fn $name() {
                $moment(Death::$death, Policy::$policy);
            }
        )*
    };
}

rows! {
    idle_sigkill_breaks_the_pool: idle(Kill, Break);
    idle_segfault_breaks_the_pool: idle(Segv, Break);
    idle_abort_breaks_the_pool: idle(Abort, Break);
    idle_exit_breaks_the_pool: idle(Exit, Break);
    idle_sigsegv_signal_breaks_the_pool: idle(SegvSignal, Break);
    idle_sigkill_restarts: idle(Kill, Restart);
    idle_segfault_restarts: idle(Segv, Restart);
    idle_abort_restarts: idle(Abort, Restart);
    idle_exit_restarts: idle(Exit, Restart);

    running_sigkill_breaks_the_pool: running(Kill, Break);
    running_segfault_breaks_the_pool: running(Segv, Break);
    running_abort_breaks_the_pool: running(Abort, Break);
    running_exit_breaks_the_pool: running(Exit, Break);
    running_sigsegv_signal_breaks_the_pool: running(SegvSignal, Break);
    running_sigkill_restarts: running(Kill, Restart);
    running_segfault_restarts: running(Segv, Restart);
    running_abort_restarts: running(Abort, Restart);
    running_exit_restarts: running(Exit, Restart);

    initializer_sigkill_breaks_the_pool: initializer(Kill, Break);
    initializer_segfault_breaks_the_pool: initializer(Segv, Break);
    initializer_abort_breaks_the_pool: initializer(Abort, Break);
    initializer_exit_breaks_the_pool: initializer(Exit, Break);
    initializer_sigsegv_signal_breaks_the_pool: initializer(SegvSignal, Break);
    initializer_sigkill_breaks_the_pool_despite_restart: initializer(Kill, Restart);
    initializer_segfault_breaks_the_pool_despite_restart: initializer(Segv, Restart);
    initializer_abort_breaks_the_pool_despite_restart: initializer(Abort, Restart);
    initializer_exit_breaks_the_pool_despite_restart: initializer(Exit, Restart);

    big_argument_sigkill_breaks_the_pool: big_argument(Kill, Break);
    big_argument_segfault_breaks_the_pool: big_argument(Segv, Break);
    big_argument_abort_breaks_the_pool: big_argument(Abort, Break);
    big_argument_exit_breaks_the_pool: big_argument(Exit, Break);
    big_argument_sigkill_restarts: big_argument(Kill, Restart);
    big_argument_segfault_restarts: big_argument(Segv, Restart);
    big_argument_abort_restarts: big_argument(Abort, Restart);
    big_argument_exit_restarts: big_argument(Exit, Restart);

    writing_result_sigkill_breaks_the_pool: writing_result(Kill, Break);
    writing_result_segfault_breaks_the_pool: writing_result(Segv, Break);
    writing_result_abort_breaks_the_pool: writing_result(Abort, Break);
    writing_result_exit_breaks_the_pool: writing_result(Exit, Break);
    writing_result_sigsegv_signal_breaks_the_pool: writing_result(SegvSignal, Break);
    writing_result_sigkill_restarts: writing_result(Kill, Restart);
    writing_result_segfault_restarts: writing_result(Segv, Restart);
    writing_result_abort_restarts: writing_result(Abort, Restart);
    writing_result_exit_restarts: writing_result(Exit, Restart);
}
