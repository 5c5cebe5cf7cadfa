//! Regressions found by reviewing the future and the thread pool: a
//! done-callback that waits for a task it submits, a panicking waker, a
//! promise dropped after its future, and two concurrent shutdowns.

use std::future::Future as _;
mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use concurrent_futures::{as_completed, Error, Promise, ThreadPoolExecutor};

const LONG: Duration = Duration::from_secs(10);

/// While a worker runs a done-callback it must not count as idle: a task
/// submitted meanwhile (here by a caller woken by the same result) gets a
/// thread of its own, so a callback that waits for it does not deadlock.
/// Before the fix the second task was stuck behind the callback in most
/// runs.
#[test]
fn a_callback_waiting_for_a_new_task_does_not_block_it() {
    // The pools are dropped (joined) inside: a hang there fails the test.
    common::with_timeout(6 * LONG, callback_waiting_for_a_new_task);
}

fn callback_waiting_for_a_new_task() {
    for _ in 0..200 {
        let pool = Arc::new(ThreadPoolExecutor::new(2).unwrap());
        let (go, go_rx) = mpsc::channel::<()>();
        let first = pool.submit(move || go_rx.recv_timeout(LONG).is_ok());
        let (b_tx, b_rx) = mpsc::channel::<bool>();
        let (cb_tx, cb_rx) = mpsc::channel();
        first.add_done_callback(move |_| {
            // Waits for the task the main thread submits once `first` is done.
            let _ = cb_tx.send(b_rx.recv_timeout(LONG));
        });
        go.send(()).unwrap();
        assert!(first.wait_timeout(LONG));
        let mut second = pool.submit(move || b_tx.send(true).is_ok());
        assert_eq!(second.result_timeout(LONG), Ok(true));
        assert_eq!(cb_rx.recv_timeout(LONG), Ok(Ok(true)));
    }
}

struct PanickingWaker;

impl Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        panic!("waker boom");
    }
}

/// A waker that panics when woken is reported; the done-callbacks and
/// `as_completed` waiters registered after it are still told.
#[test]
fn a_panicking_waker_does_not_stop_the_other_listeners() {
    let (promise, mut fut) = Promise::<u8>::new();
    let waker = Waker::from(Arc::new(PanickingWaker));
    let mut cx = Context::from_waker(&waker);
    assert!(matches!(
        std::pin::Pin::new(&mut fut).poll(&mut cx),
        Poll::Pending
    ));
    let (tx, rx) = mpsc::channel();
    fut.add_done_callback(move |f| {
        let _ = tx.send(f.exception());
    });
    let completer = thread::spawn(move || promise.complete(Ok(5)).is_ok());
    {
        let mut done = as_completed([&fut]).timeout(LONG);
        assert!(matches!(done.next(), Some(Ok(_))));
    }
    assert_eq!(rx.recv_timeout(LONG), Ok(None));
    assert!(completer.join().unwrap());
    assert_eq!(fut.result_timeout(LONG), Ok(5));
}

/// A promise dropped without completing fails its future, and that
/// future's done-callbacks run, even if the future itself was dropped first.
#[test]
fn dropping_a_promise_after_its_future_still_runs_the_callbacks() {
    let (promise, fut) = Promise::<u8>::new();
    let (tx, rx) = mpsc::channel();
    fut.add_done_callback(move |f| {
        let _ = tx.send(f.exception());
    });
    drop(fut);
    drop(promise);
    assert!(matches!(
        rx.recv_timeout(LONG),
        Ok(Some(Error::BrokenPool(_)))
    ));
}

/// Two threads calling `shutdown()` at once both return only once the
/// submitted work is done (the second used to return at once).
#[test]
fn concurrent_shutdowns_both_wait_for_the_work() {
    common::with_timeout(LONG, || {
        let pool = Arc::new(ThreadPoolExecutor::new(1).unwrap());
        let fut = pool.submit(|| thread::sleep(Duration::from_millis(300)));
        let other = Arc::clone(&pool);
        let first = thread::spawn(move || other.shutdown());
        thread::sleep(Duration::from_millis(50));
        pool.shutdown();
        assert!(
            fut.done(),
            "the second shutdown returned before the work was done"
        );
        first.join().unwrap();
    });
}
