//! `Future<T>` and `Promise<T>`: states, cancellation, callbacks, blocking
//! waits and `.await` (docs/conformance.md F1-F11).

use std::future::Future as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{recv, with_timeout, Gate, LONG};
use concurrent_futures::{as_completed, Error, Future, Promise, ThreadPoolExecutor};
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};

/// What a done-callback saw.
#[derive(Debug, PartialEq)]
struct Seen {
    done: bool,
    cancelled: bool,
    error: Option<Error>,
    thread: thread::ThreadId,
}

/// Adds a callback to `fut` that reports what it saw on the returned channel.
fn observe<T: 'static>(fut: &Future<T>) -> Receiver<Seen> {
    let (tx, rx) = unbounded();
    fut.add_done_callback(move |f| {
        tx.send(Seen {
            done: f.done(),
            cancelled: f.cancelled(),
            error: f.exception(),
            thread: thread::current().id(),
        })
        .unwrap();
    });
    rx
}

/// Asserts that `rx` got exactly one report and that no more can come (the
/// callback was consumed), and returns it.
#[track_caller]
fn only_report(rx: &Receiver<Seen>) -> Seen {
    let seen = recv(rx);
    // The callback's sender goes away when the callback returns, which may be
    // a moment after its send: wait for that, and for no second report.
    assert_eq!(rx.recv_timeout(LONG), Err(RecvTimeoutError::Disconnected));
    seen
}

/// A pool of one worker, blocked on the returned gate until it opens, so
/// that what is submitted next stays queued.
fn blocked_pool() -> (ThreadPoolExecutor, Gate, Future<bool>) {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let (started_tx, started) = unbounded();
    let g = gate.waiter();
    let blocker = pool.submit(move || {
        started_tx.send(()).unwrap();
        g.wait()
    });
    recv(&started);
    (pool, gate, blocker)
}

#[test]
fn callback_added_before_completion_runs_once_in_the_completing_thread() {
    // F1: finished with a value.
    let (promise, fut) = Promise::new();
    let seen = observe(&fut);
    let completer = thread::spawn(move || {
        promise.complete(Ok(5)).unwrap();
        thread::current().id()
    });
    let completer_id = completer.join().unwrap();
    let report = only_report(&seen);
    assert_eq!(
        report,
        Seen {
            done: true,
            cancelled: false,
            error: None,
            thread: completer_id,
        }
    );
    assert_eq!(fut.result(), Ok(5));
}

#[test]
fn callback_added_before_a_panic_sees_the_panic() {
    // F1: finished with a panic.
    let (pool, mut gate, mut blocker) = blocked_pool();
    let fut = pool.submit(|| -> u8 { panic!("boom") });
    let seen = observe(&fut);
    gate.open();
    let report = only_report(&seen);
    assert!(report.done);
    assert!(!report.cancelled);
    match report.error {
        Some(Error::Panicked { message, .. }) => assert_eq!(message, "boom"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(blocker.result_timeout(LONG), Ok(true));
}

#[test]
fn callback_added_before_cancel_runs_once_and_sees_cancelled() {
    // F1: cancelled; F4: cancelling again does not run it again.
    let (_promise, fut) = Promise::<u8>::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    fut.add_done_callback(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    let seen = observe(&fut);
    assert!(fut.cancel());
    let report = only_report(&seen);
    assert_eq!(
        report,
        Seen {
            done: true,
            cancelled: true,
            error: Some(Error::Cancelled),
            thread: thread::current().id(),
        }
    );
    assert!(fut.cancel());
    assert!(fut.cancel_handle().cancel());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn callback_added_after_completion_runs_at_once_in_the_callers_thread() {
    // F2
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let failed = pool.submit(|| -> u8 { panic!("late") });
    assert!(failed.wait_timeout(LONG));
    let seen = observe(&failed);
    // Already sent: the callback ran inside `add_done_callback`.
    let report = seen.try_recv().expect("the callback ran at once");
    assert_eq!(report.thread, thread::current().id());
    assert!(report.done);
    match report.error {
        Some(Error::Panicked { message, .. }) => assert_eq!(message, "late"),
        other => panic!("unexpected {other:?}"),
    }

    let ok = Future::ready(Ok("v"));
    let report = observe(&ok).try_recv().expect("the callback ran at once");
    assert_eq!(
        report,
        Seen {
            done: true,
            cancelled: false,
            error: None,
            thread: thread::current().id(),
        }
    );

    let (_promise, cancelled) = Promise::<u8>::new();
    assert!(cancelled.cancel());
    let report = observe(&cancelled)
        .try_recv()
        .expect("the callback ran at once");
    assert!(report.cancelled);
    assert_eq!(report.error, Some(Error::Cancelled));
}

#[test]
fn panicking_callback_does_not_stop_the_others_and_the_worker_survives() {
    // F3 (the report on stderr: `panicking_callback_is_reported_on_stderr`)
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .thread_name_prefix("cb")
        .build()
        .unwrap();
    let mut gate = Gate::new();
    let g = gate.waiter();
    let fut = pool.submit(move || g.wait());
    let (tx, rx) = unbounded();
    let tx1 = tx.clone();
    fut.add_done_callback(move |_| tx1.send("first").unwrap());
    fut.add_done_callback(|_| panic!("callback boom"));
    fut.add_done_callback(move |_| tx.send("third").unwrap());
    gate.open();
    assert_eq!(recv(&rx), "first");
    assert_eq!(recv(&rx), "third");
    assert_eq!(fut.result(), Ok(true));
    // The same worker thread runs the next task.
    let mut name = pool.submit(|| thread::current().name().map(String::from));
    assert_eq!(name.result_timeout(LONG), Ok(Some("cb_0".to_string())));
    assert_eq!(pool.num_threads(), 1);

    // A panicking callback run at once does not unwind into the caller.
    let done = Future::ready(Ok(1));
    done.add_done_callback(|_| panic!("immediate boom"));
    assert_eq!(done.result(), Ok(1));
}

/// Records the messages of the events on the thread it is the default
/// subscriber of.
#[derive(Clone, Default)]
struct Messages(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Messages {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let line = format!(
            "{} {}: {}",
            event.metadata().level(),
            event.metadata().target(),
            text.0
        );
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The child side of `panicking_callback_is_an_event_not_stderr`.
#[test]
fn panicking_callback_child() {
    if std::env::var_os("CF_PANICKING_CALLBACK_CHILD").is_none() {
        return;
    }
    let messages = Messages::default();
    tracing::subscriber::with_default(messages.clone(), || {
        let (promise, fut) = Promise::new();
        fut.add_done_callback(|_| panic!("reported boom"));
        promise.complete(Ok(1)).unwrap();
        assert_eq!(fut.result(), Ok(1));
    });
    let seen = messages.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].starts_with("ERROR concurrent_futures: a done callback panicked at ")
            && seen[0].ends_with(": reported boom"),
        "{seen:?}"
    );
}

#[test]
fn panicking_callback_is_an_event_not_stderr() {
    // F3: the report is a `tracing` error event (checked in the child,
    // which is this test binary running the test above); the library
    // writes nothing to stderr itself.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "future::panicking_callback_child", "--nocapture"])
        .env("CF_PANICKING_CALLBACK_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed: {stderr}");
    assert!(!stderr.contains("panicked"), "printed: {stderr}");
}

#[test]
fn cancel_pending_returns_true_and_marks_cancelled() {
    // F4
    let (pool, mut gate, mut blocker) = blocked_pool();
    let queued = pool.submit(|| 1);
    assert!(queued.cancel());
    assert!(queued.cancelled());
    assert!(queued.done());
    gate.open();
    assert_eq!(queued.result(), Err(Error::Cancelled));
    assert_eq!(blocker.result_timeout(LONG), Ok(true));

    let (promise, fut) = Promise::<u8>::new();
    assert!(fut.cancel());
    assert!(!promise.set_running());
    assert_eq!(fut.result(), Err(Error::Cancelled));
}

#[test]
fn cancel_running_returns_false() {
    // F4
    let (_pool, mut gate, mut blocker) = blocked_pool();
    assert!(blocker.running());
    assert!(!blocker.cancel());
    assert!(!blocker.cancel_handle().cancel());
    assert!(blocker.running());
    assert!(!blocker.cancelled());
    gate.open();
    assert_eq!(blocker.result_timeout(LONG), Ok(true));
}

#[test]
fn cancel_already_cancelled_returns_true() {
    // F4
    let (_promise, fut) = Promise::<u8>::new();
    assert!(fut.cancel());
    assert!(fut.cancel());
    assert!(fut.cancelled());
}

#[test]
fn cancel_finished_returns_false() {
    // F4: finished with a value, and with an error.
    let ok = Future::ready(Ok(1));
    assert!(!ok.cancel());
    assert!(!ok.cancelled());
    assert_eq!(ok.result(), Ok(1));

    let failed: Future<u8> = Future::ready(Err(Error::Shutdown));
    assert!(!failed.cancel());
    assert!(!failed.cancelled());
    assert_eq!(failed.result(), Err(Error::Shutdown));

    let pool = ThreadPoolExecutor::new(1).unwrap();
    let mut fut = pool.submit(|| 2);
    assert!(fut.wait_timeout(LONG));
    assert!(!fut.cancel());
    assert_eq!(fut.result_timeout(Duration::ZERO), Ok(2));
    // The value is gone, the future is still done and not cancellable.
    assert!(!fut.cancel());
    assert!(fut.done());
}

#[test]
fn done_running_and_cancelled_follow_the_state() {
    // F5
    let (promise, pending) = Promise::<u8>::new();
    assert_eq!(
        (pending.done(), pending.running(), pending.cancelled()),
        (false, false, false)
    );
    assert!(promise.set_running());
    assert_eq!(
        (pending.done(), pending.running(), pending.cancelled()),
        (false, true, false)
    );
    promise.complete(Ok(1)).unwrap();
    assert_eq!(
        (pending.done(), pending.running(), pending.cancelled()),
        (true, false, false)
    );

    let (promise, failing) = Promise::<u8>::new();
    assert!(promise.set_running());
    promise.complete(Err(Error::Shutdown)).unwrap();
    assert_eq!(
        (failing.done(), failing.running(), failing.cancelled()),
        (true, false, false)
    );

    let (_promise, cancelled) = Promise::<u8>::new();
    assert!(cancelled.cancel());
    assert_eq!(
        (cancelled.done(), cancelled.running(), cancelled.cancelled()),
        (true, false, true)
    );

    // A failed cancel does not mark it cancelled.
    let (promise, running) = Promise::<u8>::new();
    assert!(promise.set_running());
    assert!(!running.cancel());
    assert_eq!(
        (running.done(), running.running(), running.cancelled()),
        (false, true, false)
    );
}

#[test]
fn result_timeout_zero_on_pending_or_running_times_out_and_stays_usable() {
    // F6
    let (pool, mut gate, mut running) = blocked_pool();
    let mut pending = pool.submit(|| 3);
    assert_eq!(
        running.result_timeout(Duration::ZERO),
        Err(Error::timeout())
    );
    assert_eq!(
        pending.result_timeout(Duration::ZERO),
        Err(Error::timeout())
    );
    assert!(running.running());
    assert!(!pending.done());
    assert_eq!(
        pending.exception_timeout(Duration::ZERO),
        Err(Error::timeout())
    );
    assert!(!pending.wait_timeout(Duration::ZERO));
    gate.open();
    assert_eq!(running.result_timeout(LONG), Ok(true));
    assert_eq!(pending.result_timeout(LONG), Ok(3));
}

#[test]
fn result_timeout_zero_on_cancelled_gives_cancelled() {
    // F6
    let (_promise, mut fut) = Promise::<u8>::new();
    assert!(fut.cancel());
    assert_eq!(fut.result_timeout(Duration::ZERO), Err(Error::Cancelled));
    // Still cancelled, not "taken".
    assert_eq!(fut.result_timeout(Duration::ZERO), Err(Error::Cancelled));
    assert_eq!(fut.result(), Err(Error::Cancelled));
}

#[test]
fn result_timeout_returns_as_soon_as_the_task_finishes() {
    // F7: a 5 s timeout, the task finishes after 100 ms.
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let mut fut = pool.submit(|| {
        thread::sleep(Duration::from_millis(100));
        9
    });
    let start = Instant::now();
    assert_eq!(fut.result_timeout(Duration::from_secs(5)), Ok(9));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn result_blocked_in_one_thread_returns_cancelled_when_another_cancels() {
    // F8
    let (pool, mut gate, mut blocker) = blocked_pool();
    let fut = pool.submit(|| 1);
    let handle = fut.cancel_handle();
    let (about_to_wait_tx, about_to_wait) = unbounded();
    let (result_tx, result) = unbounded();
    let waiter = thread::spawn(move || {
        about_to_wait_tx.send(()).unwrap();
        result_tx.send(fut.result()).unwrap();
    });
    recv(&about_to_wait);
    // Give the waiter time to block in `result()` (it is correct either way).
    thread::sleep(Duration::from_millis(20));
    assert!(handle.cancel());
    assert_eq!(recv(&result), Err(Error::Cancelled));
    waiter.join().unwrap();
    gate.open();
    assert_eq!(blocker.result_timeout(LONG), Ok(true));
}

#[test]
fn exception_is_none_on_success_and_the_error_on_failure() {
    // F9
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let ok = pool.submit(|| 1);
    assert_eq!(ok.exception_timeout(LONG), Ok(None));
    assert_eq!(ok.exception(), None);
    assert_eq!(ok.result(), Ok(1));

    let failed = pool.submit(|| -> u8 { panic!("exceptional") });
    match failed.exception_timeout(LONG) {
        Ok(Some(Error::Panicked {
            message, location, ..
        })) => {
            assert_eq!(message, "exceptional");
            assert!(location.unwrap().starts_with("tests/thread/future.rs:"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Asking does not consume the error.
    assert!(matches!(failed.exception(), Some(Error::Panicked { .. })));
    assert!(matches!(failed.result(), Err(Error::Panicked { .. })));
}

#[test]
fn exception_wakes_when_another_thread_finishes_the_future() {
    // F9
    let (promise, fut) = Promise::<u8>::new();
    let (about_to_wait_tx, about_to_wait) = unbounded();
    let (tx, rx) = unbounded();
    let waiter = thread::spawn(move || {
        about_to_wait_tx.send(()).unwrap();
        tx.send(fut.exception()).unwrap();
    });
    recv(&about_to_wait);
    thread::sleep(Duration::from_millis(20));
    promise
        .complete(Err(Error::Codec("bad bytes".into())))
        .unwrap();
    assert_eq!(recv(&rx), Some(Error::Codec("bad bytes".into())));
    waiter.join().unwrap();

    let (promise, fut) = Promise::<u8>::new();
    let (tx, rx) = unbounded();
    let waiter = thread::spawn(move || tx.send(fut.exception()).unwrap());
    thread::sleep(Duration::from_millis(20));
    promise.complete(Ok(1)).unwrap();
    assert_eq!(recv(&rx), None);
    waiter.join().unwrap();
}

#[test]
fn future_completes_exactly_once() {
    // F10
    let (promise, fut) = Promise::new();
    let seen = observe(&fut);
    assert_eq!(promise.complete(Ok(1)), Ok(()));
    assert_eq!(promise.complete(Ok(2)), Err(Ok(2)));
    assert_eq!(
        promise.complete(Err(Error::Shutdown)),
        Err(Err(Error::Shutdown))
    );
    assert!(!promise.cancel());
    assert!(!fut.cancel());
    assert!(promise.is_done());
    assert_eq!(only_report(&seen).error, None);
    assert_eq!(fut.result(), Ok(1));

    // Cancelled first: the completion is refused, the cancel kept.
    let (promise, fut) = Promise::new();
    assert!(promise.cancel());
    assert_eq!(promise.complete(Ok("late")), Err(Ok("late")));
    assert!(!promise.set_running());
    assert_eq!(fut.result(), Err(Error::Cancelled));
}

#[test]
fn dropped_promise_fails_its_future_instead_of_hanging() {
    // F10: the one completion a lost promise still makes.
    let (promise, mut fut) = Promise::<u8>::new();
    drop(promise);
    assert!(matches!(
        fut.result_timeout(Duration::ZERO),
        Err(Error::BrokenPool(_))
    ));

    // A completed promise that is dropped changes nothing.
    let (promise, fut) = Promise::new();
    promise.complete(Ok(4)).unwrap();
    drop(promise);
    assert_eq!(fut.result(), Ok(4));
}

#[test]
fn result_after_the_value_was_taken_is_already_taken() {
    let (promise, mut fut) = Promise::new();
    promise.complete(Ok(vec![1, 2])).unwrap();
    assert_eq!(fut.result_timeout(Duration::ZERO), Ok(vec![1, 2]));
    assert_eq!(fut.result_timeout(Duration::ZERO), Err(Error::AlreadyTaken));
    assert!(fut.done());
    assert_eq!(fut.exception(), None);
    assert_eq!(fut.result(), Err(Error::AlreadyTaken));
}

#[test]
fn sole_handle_and_shared_handle_take_the_same_outcome() {
    // Once the promise is gone the future's handle is the only one left, and
    // `result` reads the state without locking; a cancel handle keeps it
    // shared, and it locks. Both must give each outcome alike.
    let boom = Error::Panicked {
        message: "boom".into(),
        location: None,
        backtrace: None,
    };
    for shared in [false, true] {
        let (promise, mut ok) = Promise::new();
        let keep = shared.then(|| ok.cancel_handle());
        promise.complete(Ok(7u8)).unwrap();
        assert_eq!(ok.result_timeout(Duration::ZERO), Ok(7), "shared: {shared}");
        assert_eq!(ok.result_timeout(Duration::ZERO), Err(Error::AlreadyTaken));
        drop(keep);

        let (promise, mut failed) = Promise::<u8>::new();
        let keep = shared.then(|| failed.cancel_handle());
        promise.complete(Err(boom.clone())).unwrap();
        assert_eq!(failed.result_timeout(Duration::ZERO), Err(boom.clone()));
        assert_eq!(failed.result(), Err(boom.clone()), "shared: {shared}");
        drop(keep);

        let (promise, cancelled) = Promise::<u8>::new();
        let keep = shared.then(|| cancelled.cancel_handle());
        assert!(cancelled.cancel());
        drop(promise);
        assert_eq!(
            cancelled.result(),
            Err(Error::Cancelled),
            "shared: {shared}"
        );
        drop(keep);
    }
}

#[test]
fn dropping_a_future_does_not_cancel_its_task() {
    let (pool, mut gate, mut blocker) = blocked_pool();
    let (tx, rx) = unbounded();
    drop(pool.submit(move || tx.send("ran").unwrap()));
    gate.open();
    assert_eq!(recv(&rx), "ran");
    assert_eq!(blocker.result_timeout(LONG), Ok(true));
}

#[test]
fn failed_future_gives_its_error_to_every_observer() {
    let (promise, fut) = Promise::<u8>::new();
    promise
        .complete(Err(Error::Panicked {
            message: "m".into(),
            location: None,
            backtrace: None,
        }))
        .unwrap();
    let expected = Error::Panicked {
        message: "m".into(),
        location: None,
        backtrace: None,
    };
    assert_eq!(fut.exception(), Some(expected.clone()));
    assert_eq!(fut.exception(), Some(expected.clone()));
    assert_eq!(fut.result(), Err(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaiting_under_tokio_gives_the_same_outcome_as_result() {
    // F11
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut gate = Gate::new();
    let g = gate.waiter();
    let fut = pool.submit(move || {
        g.wait();
        7
    });
    // Polled while pending first, then woken by the worker.
    let task = tokio::spawn(fut);
    tokio::time::sleep(Duration::from_millis(20)).await;
    gate.open();
    let out = tokio::time::timeout(LONG, task).await.expect("hung");
    assert_eq!(out.unwrap(), Ok(7));

    let panicked = pool.submit(|| -> u8 { panic!("async boom") });
    match tokio::time::timeout(LONG, panicked).await.expect("hung") {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "async boom"),
        other => panic!("unexpected {other:?}"),
    }

    let (promise, fut) = Promise::<u8>::new();
    let handle = fut.cancel_handle();
    let task = tokio::spawn(fut);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(handle.cancel());
    let out = tokio::time::timeout(LONG, task).await.expect("hung");
    assert_eq!(out.unwrap(), Err(Error::Cancelled));
    drop(promise);

    let ready: Future<u8> = Future::ready(Err(Error::Shutdown));
    assert_eq!(ready.await, Err(Error::Shutdown));
    // The pool's `Drop` joins its threads; do it off the runtime's threads.
    tokio::task::spawn_blocking(move || drop(pool))
        .await
        .unwrap();
}

#[test]
fn awaiting_under_block_on_gives_the_same_outcome_as_result() {
    // F11
    let (promise, fut) = Promise::new();
    let completer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        promise.complete(Ok("awaited")).unwrap();
    });
    let out = with_timeout(LONG, move || futures::executor::block_on(fut));
    assert_eq!(out, Ok("awaited"));
    completer.join().unwrap();

    let pool = ThreadPoolExecutor::new(1).unwrap();
    let fut = pool.submit(|| -> u8 { panic!("blocked on") });
    match with_timeout(LONG, move || futures::executor::block_on(fut)) {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "blocked on"),
        other => panic!("unexpected {other:?}"),
    }

    // The future can be awaited by reference-to-pin too, then reused.
    let (promise, mut fut) = Promise::new();
    promise.complete(Ok(3)).unwrap();
    assert_eq!(futures::executor::block_on(&mut fut), Ok(3));
    assert_eq!(fut.result(), Err(Error::AlreadyTaken));
}

#[test]
fn a_future_polled_by_two_tasks_in_turn_wakes_the_last_one() {
    // F11: the waker is replaced, not lost, when another task polls.
    use futures::FutureExt;
    let (promise, mut fut) = Promise::new();
    // First task polls once and gives up.
    assert!(futures::executor::block_on(async { (&mut fut).now_or_never() }).is_none());
    let completer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        promise.complete(Ok(11)).unwrap();
    });
    let out = with_timeout(LONG, move || futures::executor::block_on(fut));
    assert_eq!(out, Ok(11));
    completer.join().unwrap();
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
