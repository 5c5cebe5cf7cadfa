//! Process pool conformance for the ends of a worker's life
//! (docs/conformance.md P16, P17): workers exit when their parent is killed, and
//! a worker that never calls `init()` fails with an error naming it and
//! leaves no process behind.
//!
//! Workers are this test binary run again as `worker_entry` (see
//! `process_common`); the parent of P16 is this binary run again as
//! `parent_entry`. Processes are counted by pid and checked in `/proc`.

use std::fmt::Debug;
use std::io::Write;
use std::thread;
use std::time::Duration;

use crate::process_common::*;
use concurrent_futures::{task, Error, ProcessPoolExecutor};

/// The message of an `Err(Error::BrokenPool)`; fails the test otherwise.
#[track_caller]
fn broken_reason<T: Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::BrokenPool(msg)) => msg,
        other => panic!("expected Err(BrokenPool), got {other:?}"),
    }
}

// --- P16: the parent dies -----------------------------------------------

/// Set for the child process that plays the parent in P16.
const P16_PARENT: &str = "CF_TEST_P16_PARENT";

/// The parent of P16 when [`P16_PARENT`] is set (else returns at once):
/// starts two workers busy for 30 s, prints their pids, and sleeps until
/// the test kills it.
#[test]
fn parent_entry() {
    if std::env::var_os(P16_PARENT).is_none() {
        return;
    }
    let pool = pool(2);
    let busy: Vec<_> = (0..2)
        .map(|_| pool.submit(task!(sleep_ms), 30_000))
        .collect();
    eventually("both workers took a task", || {
        busy.iter().all(|f| f.running())
    });
    thread::sleep(Duration::from_millis(50));
    let pids: Vec<String> = pool.worker_pids().iter().map(u32::to_string).collect();
    println!("PIDS {}", pids.join(" "));
    std::io::stdout().flush().unwrap();
    thread::sleep(3 * LONG);
    // Not killed: do not wait for the busy tasks.
    std::process::exit(2);
}

// P16
#[test]
fn killing_the_parent_ends_every_worker_within_a_second() {
    let mut parent = ChildRun::start(
        &test_path(module_path!(), "parent_entry"),
        &[(P16_PARENT, "1")],
    );
    let pids = parse_pids(&parent.line_after("PIDS "));
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.iter().all(|&p| alive(p)), "workers not running");
    parent.child.kill().unwrap(); // SIGKILL
    parent.child.wait().unwrap();
    // Gone, or a zombie waiting for init to reap it.
    let ended = within(Duration::from_secs(1), || pids.iter().all(|&p| !alive(p)));
    let states: Vec<_> = pids.iter().map(|&p| (p, proc_state(p))).collect();
    assert!(ended, "workers outlived their parent: {states:?}");
}

// --- P17: a worker that never calls init() ------------------------------

// P17
#[test]
fn worker_that_never_calls_init_is_killed_with_an_error_naming_init() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_command("/bin/sleep")
        .worker_args(["30"])
        .handshake_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let mut fut = pool.submit(task!(pid), ());
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 1);
    let msg = broken_reason(fut.result_timeout(LONG));
    assert!(msg.contains("concurrent_futures::init()"), "{msg}");
    assert!(reaped(pids[0]), "the silent worker is still there");
    // No new process is started for later work.
    let later = broken_reason(pool.submit(task!(pid), ()).result_timeout(LONG));
    assert!(later.contains("concurrent_futures::init()"), "{later}");
    assert!(pool.worker_pids().is_empty());
}

/// Set for the worker of P17 that runs `main_without_init`.
const P17_MAIN: &str = "CF_TEST_P17_MAIN";

/// A `main` that forgets `init()`: it builds a pool and uses it. As a
/// worker it must be refused, not start workers of its own.
#[test]
fn main_without_init() {
    if std::env::var_os(P17_MAIN).is_none() {
        return;
    }
    let built = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_args([
            &*test_path(module_path!(), "main_without_init"),
            "--exact",
            "--nocapture",
            "--quiet",
        ])
        .build();
    match built {
        Ok(pool) => {
            let _ = pool.submit(task!(pid), ()).result_timeout(LONG);
        }
        // What `fn main() -> Result<..>` prints before it exits.
        Err(e) => {
            eprintln!("Error: {e:?}");
            std::process::exit(1);
        }
    }
}

// P17
#[test]
fn main_without_init_fails_with_an_error_naming_init_and_no_runaway() {
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_args([
            &*test_path(module_path!(), "main_without_init"),
            "--exact",
            "--nocapture",
            "--quiet",
        ])
        .env(P17_MAIN, "1")
        .build()
        .unwrap();
    let mut fut = pool.submit(task!(pid), ());
    let pids = pool.worker_pids();
    let msg = broken_reason(fut.result_timeout(LONG));
    assert!(msg.contains("concurrent_futures::init()"), "{msg}");
    assert!(
        msg.contains("cannot be created inside a worker process"),
        "{msg}"
    );
    assert!(pids.iter().all(|&p| reaped(p)));
}

/// Tries to build a pool inside a worker.
fn nested_pool() -> String {
    match ProcessPoolExecutor::new(1) {
        Ok(_) => "built".to_string(),
        Err(e) => format!("{e:?}"),
    }
}

// P17
#[test]
fn pool_cannot_be_built_inside_a_worker() {
    let pool = pool(1);
    let got = pool
        .submit(task!(nested_pool), ())
        .result_timeout(LONG)
        .unwrap();
    assert!(got.starts_with("InvalidArgument"), "{got}");
}

// --- worker_command: a separate worker binary --------------------------------

/// The worker's environment variable `CF_TEST_ENV`, empty if unset.
fn env_value() -> String {
    std::env::var("CF_TEST_ENV").unwrap_or_default()
}

/// `worker_command` runs the program it names, not this executable: here a
/// copy of the test binary under another path (a separate binary that names
/// the same tasks), checked through the worker's `/proc/<pid>/exe`; `env`
/// reaches the worker.
#[test]
fn worker_command_runs_a_separate_worker_binary() {
    let dir = std::env::temp_dir().join(format!("cf-worker-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a directory for the copy");
    let copy = dir.join("separate-worker");
    let me = std::env::current_exe().expect("this test binary");
    std::fs::copy(&me, &copy).expect("copy the test binary");
    let pool = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_command(copy.as_os_str())
        .worker_args(WORKER_ARGS)
        .env("CF_TEST_ENV", "from the pool")
        .build()
        .expect("build the pool");
    let mut square_fut = pool.submit(task!(square), 12);
    assert_eq!(square_fut.result_timeout(LONG), Ok(144));
    let mut env_fut = pool.submit(task!(env_value), ());
    assert_eq!(
        env_fut.result_timeout(LONG),
        Ok("from the pool".to_string())
    );
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 1);
    let exe = std::fs::read_link(format!("/proc/{}/exe", pids[0])).expect("the worker's exe");
    assert_eq!(exe, copy);
    pool.shutdown();
    assert!(within(LONG, || reaped(pids[0])));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `handshake_timeout(Duration::MAX)` means "no limit"; adding it to an
/// instant used to panic the pool's writer thread.
#[test]
fn an_unrepresentable_handshake_timeout_waits_without_limit() {
    let pool = builder()
        .max_workers(1)
        .handshake_timeout(Duration::MAX)
        .build()
        .expect("build the pool");
    let mut fut = pool.submit(task!(square), 7);
    assert_eq!(fut.result_timeout(LONG), Ok(49));
}
