//! Regressions found by reviewing the process pool: shutting the pool down
//! from a done-callback, a grandchild process holding the worker's stderr,
//! a handshake timeout too long to add to an instant, and two concurrent
//! shutdowns.

mod common;
mod process_common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::task;
use process_common::*;

/// The worker side: `init()` serves tasks when this binary runs as a worker
/// and returns at once in a normal test run.
#[test]
fn worker_entry() {
    concurrent_futures::init();
}

/// Starts `sleep 30` with the worker's stdio (so it inherits the stderr
/// pipe) and returns its pid.
fn spawn_grandchild() -> u32 {
    std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .map(|c| c.id())
        .unwrap_or(0)
}

/// A done-callback runs on the pool's reader thread; dropping the last pool
/// handle there used to join that worker's writer, which waited for the
/// reader: a deadlock. Now the pool finishes every task.
#[test]
fn dropping_the_pool_in_a_done_callback_does_not_deadlock() {
    let pool = pool(1);
    let futures: Vec<_> = (0..3u64).map(|i| pool.submit(task!(square), i)).collect();
    let (tx, rx) = mpsc::channel();
    let holder = std::sync::Arc::new(std::sync::Mutex::new(Some(pool)));
    let h = holder.clone();
    futures[0].add_done_callback(move |_| {
        let dropped = h.lock().unwrap().take();
        drop(dropped);
        let _ = tx.send(());
    });
    assert_eq!(rx.recv_timeout(LONG), Ok(()), "the callback returned");
    let mut values = Vec::new();
    for mut f in futures {
        values.push(f.result_timeout(LONG));
    }
    assert_eq!(values, vec![Ok(0), Ok(1), Ok(4)]);
}

/// A grandchild that inherited the worker's stderr keeps that pipe open;
/// shutdown used to wait for it (30 s here). Now it waits at most a moment.
#[test]
fn shutdown_does_not_wait_for_a_grandchild_holding_stderr() {
    let pool = pool(1);
    let mut fut = pool.submit(task!(spawn_grandchild), ());
    let grandchild = fut.result_timeout(LONG).expect("the task ran");
    assert_ne!(grandchild, 0, "sleep started");
    let start = Instant::now();
    let took = common::with_timeout(4 * LONG, move || {
        pool.shutdown();
        start.elapsed()
    });
    let _ = std::process::Command::new("kill")
        .args(["-9", &grandchild.to_string()])
        .status();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
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

/// Two threads calling `shutdown()` at once: both return only once the
/// submitted work is done (the second used to return at once).
#[test]
fn concurrent_shutdowns_both_wait_for_the_work() {
    common::with_timeout(LONG, || {
        let pool = std::sync::Arc::new(pool(1));
        let fut = pool.submit(task!(sleep_ms), 300);
        let other = pool.clone();
        let first = thread::spawn(move || other.shutdown());
        thread::sleep(Duration::from_millis(50));
        pool.shutdown();
        assert!(
            fut.done(),
            "the second shutdown returned before the work was done"
        );
        first.join().expect("the first shutdown");
    });
}
