//! loom model checks of the `Future` state machine and of the wake-ups of
//! `result`, `wait`, `as_completed` and `.await`: every interleaving of the
//! racing threads (up to loom's preemption bound) runs, and loom reports a
//! deadlock (a waiter nobody wakes) as well as a failed assertion.
//!
//! Built only with `--cfg loom`, which swaps the crate's locks for loom's
//! (src/sync.rs):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test --release --test loom_future -- --nocapture
//! ```
//!
//! loom has no clock, so the models keep to the untimed paths (`result`,
//! `wait(.., None, ..)`, `as_completed` without a timeout).
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use concurrent_futures::{as_completed, wait, Error, Future, Promise, ReturnWhen};
use loom::thread;

/// Runs `model` under loom and prints how many interleavings it explored.
fn check(name: &str, model: impl Fn() + Sync + Send + 'static) {
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    loom::model(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        model();
    });
    let n = runs.load(Ordering::Relaxed);
    eprintln!("loom model {name}: {n} interleavings");
    assert!(n > 1, "{name}: the model never branched");
}

/// What a done-callback saw: `None` until it ran, then the exception.
type Seen = Arc<std::sync::Mutex<Option<Option<Error>>>>;

/// A done-callback that counts its calls and records what it saw.
fn counting_callback<T: 'static>(fut: &Future<T>) -> (Arc<AtomicUsize>, Seen) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(None));
    let (c, s) = (Arc::clone(&calls), Arc::clone(&seen));
    fut.add_done_callback(move |f| {
        assert!(f.done(), "a callback ran before the future was done");
        c.fetch_add(1, Ordering::SeqCst);
        *s.lock().unwrap() = Some(f.exception());
    });
    (calls, seen)
}

#[test]
fn cancel_of_a_held_task_races_the_worker_taking_it() {
    // A process-pool task held by a worker: the worker's task thread takes
    // it (then the pool marks it running), while a cancel asks the worker
    // for it back. The worker decides under its inbox lock; the future
    // must say cancelled exactly when the task never ran.
    check("held cancel vs the worker starting it", || {
        use concurrent_futures::__loom::{hold, holdable_promise, holder};
        use loom::sync::Mutex;
        let (promise, fut) = holdable_promise::<u32>();
        let promise = Arc::new(Mutex::new(promise));
        // None: queued in the worker; Some(true): taken; Some(false): given back.
        let inbox = Arc::new(Mutex::new(None::<bool>));
        let h = {
            let (promise, inbox) = (Arc::clone(&promise), Arc::clone(&inbox));
            holder(move |_key, _still_held| {
                let mut q = inbox.lock().unwrap();
                let given_back = q.is_none();
                if given_back {
                    *q = Some(false);
                }
                drop(q);
                let p = promise.lock().unwrap();
                if given_back {
                    p.cancel();
                } else {
                    p.set_running();
                }
            })
        };
        // The pool's writer sends it behind another task (held), racing
        // the cancel; then the worker's task thread takes it.
        let worker = {
            let (promise, inbox) = (Arc::clone(&promise), Arc::clone(&inbox));
            thread::spawn(move || {
                if !hold(&promise.lock().unwrap(), &h) {
                    return false; // cancelled while queued: never sent
                }
                let mut q = inbox.lock().unwrap();
                let ran = q.is_none();
                if ran {
                    *q = Some(true);
                }
                drop(q);
                if ran {
                    let p = promise.lock().unwrap();
                    p.set_running();
                    let _ = p.complete(Ok(7));
                }
                ran
            })
        };
        let cancelled = fut.cancel();
        let ran = worker.join().unwrap();
        assert_ne!(ran, cancelled, "ran: {ran}, cancelled: {cancelled}");
        assert_eq!(fut.cancelled(), cancelled);
        let expected = if ran { Ok(7) } else { Err(Error::Cancelled) };
        assert_eq!(fut.result(), expected);
    });
}

#[test]
fn cancel_races_set_running() {
    check("cancel vs set_running", || {
        let (promise, fut) = Promise::<u32>::new();
        let (calls, seen) = counting_callback(&fut);
        let fut = Arc::new(fut);
        let canceller = {
            let fut = Arc::clone(&fut);
            thread::spawn(move || fut.cancel())
        };
        let started = promise.set_running();
        let cancelled = canceller.join().unwrap();
        // Exactly one side wins, and the state says which.
        assert_ne!(started, cancelled);
        assert_eq!(fut.cancelled(), cancelled);
        assert_eq!(fut.running(), started);
        if cancelled {
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(*seen.lock().unwrap(), Some(Some(Error::Cancelled)));
            assert_eq!(promise.complete(Ok(1)), Err(Ok(1)));
        } else {
            assert_eq!(calls.load(Ordering::SeqCst), 0);
            assert!(!fut.cancel(), "a running future was cancelled");
            assert_eq!(promise.complete(Ok(1)), Ok(()));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(*seen.lock().unwrap(), Some(None));
        }
        let fut = Arc::try_unwrap(fut).ok().unwrap();
        let expected = if cancelled {
            Err(Error::Cancelled)
        } else {
            Ok(1)
        };
        assert_eq!(fut.result(), expected);
    });
}

#[test]
fn complete_races_add_done_callback() {
    check("complete vs add_done_callback", || {
        let (promise, fut) = Promise::<u32>::new();
        let completer = thread::spawn(move || {
            assert!(promise.set_running());
            promise.complete(Err(Error::Shutdown)).unwrap();
        });
        // Added while the other thread completes: runs exactly once, in
        // whichever thread gets there second.
        let (calls, seen) = counting_callback(&fut);
        completer.join().unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(*seen.lock().unwrap(), Some(Some(Error::Shutdown)));
    });
}

#[test]
fn cancel_races_add_done_callback() {
    check("cancel vs add_done_callback", || {
        let (promise, fut) = Promise::<u32>::new();
        let handle = fut.cancel_handle();
        let canceller = thread::spawn(move || handle.cancel());
        let (calls, _) = counting_callback(&fut);
        assert!(canceller.join().unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!promise.set_running());
    });
}

#[test]
fn complete_races_result() {
    check("complete vs result", || {
        let (promise, fut) = Promise::<u32>::new();
        let completer = thread::spawn(move || {
            promise.set_running();
            promise.complete(Ok(7)).unwrap();
        });
        // Blocks (or not) while the value arrives; a lost wake-up is a
        // loom deadlock.
        assert_eq!(fut.result(), Ok(7));
        completer.join().unwrap();
    });
}

#[test]
fn cancel_races_result() {
    check("cancel vs result", || {
        let (promise, fut) = Promise::<u32>::new();
        let handle = fut.cancel_handle();
        let canceller = thread::spawn(move || handle.cancel());
        let waiter = thread::spawn(move || fut.result());
        assert!(canceller.join().unwrap());
        assert_eq!(waiter.join().unwrap(), Err(Error::Cancelled));
        assert!(!promise.set_running());
    });
}

#[test]
fn dropped_promise_races_result() {
    check("promise dropped vs result", || {
        let (promise, fut) = Promise::<u32>::new();
        let dropper = thread::spawn(move || drop(promise));
        assert!(matches!(fut.result(), Err(Error::BrokenPool(_))));
        dropper.join().unwrap();
    });
}

#[test]
fn completions_race_wait_all_completed() {
    check("2 completions vs wait(AllCompleted)", || {
        let (p1, f1) = Promise::<u32>::new();
        let (p2, f2) = Promise::<u32>::new();
        let t1 = thread::spawn(move || p1.complete(Ok(1)).unwrap());
        let t2 = thread::spawn(move || {
            p2.cancel();
        });
        let futures = [f1, f2];
        let (done, not_done) = wait(&futures, None, ReturnWhen::AllCompleted);
        assert_eq!(done.len(), 2);
        assert!(not_done.is_empty());
        t1.join().unwrap();
        t2.join().unwrap();
    });
}

#[test]
fn completion_races_wait_first_completed() {
    check("completion vs wait(FirstCompleted)", || {
        let (p1, f1) = Promise::<u32>::new();
        let (_p2, f2) = Promise::<u32>::new();
        let t1 = thread::spawn(move || p1.complete(Ok(1)).unwrap());
        let futures = [f1, f2];
        let (done, not_done) = wait(&futures, None, ReturnWhen::FirstCompleted);
        assert_eq!(done.len(), 1);
        assert!(std::ptr::eq(done[0], &futures[0]));
        assert_eq!(not_done.len(), 1);
        t1.join().unwrap();
    });
}

#[test]
fn failure_races_wait_first_exception() {
    check("failure vs wait(FirstException)", || {
        let (p1, f1) = Promise::<u32>::new();
        let (p2, f2) = Promise::<u32>::new();
        let t1 = thread::spawn(move || p1.complete(Ok(1)).unwrap());
        let t2 = thread::spawn(move || p2.complete(Err(Error::Shutdown)).unwrap());
        let futures = [f1, f2];
        let (done, _) = wait(&futures, None, ReturnWhen::FirstException);
        // It returns once the failure is in, whether or not f1 is.
        assert!(done.iter().any(|f| f.exception() == Some(Error::Shutdown)));
        t1.join().unwrap();
        t2.join().unwrap();
    });
}

#[test]
fn completions_race_as_completed() {
    check("2 completions vs as_completed", || {
        let (p1, f1) = Promise::<u32>::new();
        let (p2, f2) = Promise::<u32>::new();
        let t1 = thread::spawn(move || p1.complete(Ok(1)).unwrap());
        let t2 = thread::spawn(move || p2.complete(Ok(2)).unwrap());
        let mut got: Vec<u32> = as_completed(vec![f1, f2])
            .map(|f| f.result().unwrap())
            .collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2]);
        t1.join().unwrap();
        t2.join().unwrap();
    });
}

#[test]
fn completion_races_as_completed_stream() {
    check("completion vs as_completed stream", || {
        use futures::StreamExt;
        let (p1, f1) = Promise::<u32>::new();
        let t1 = thread::spawn(move || p1.complete(Ok(5)).unwrap());
        let futures = vec![Future::ready(Ok(4)), f1];
        let mut stream = as_completed(futures);
        let first = loom::future::block_on(StreamExt::next(&mut stream)).unwrap();
        let second = loom::future::block_on(StreamExt::next(&mut stream)).unwrap();
        assert!(loom::future::block_on(StreamExt::next(&mut stream)).is_none());
        let mut got = [first.result().unwrap(), second.result().unwrap()];
        got.sort_unstable();
        assert_eq!(got, [4, 5]);
        t1.join().unwrap();
    });
}

#[test]
fn completion_races_await() {
    check("complete vs .await", || {
        let (promise, fut) = Promise::<u32>::new();
        let completer = thread::spawn(move || promise.complete(Ok(9)).unwrap());
        assert_eq!(loom::future::block_on(fut), Ok(9));
        completer.join().unwrap();
    });
}

// ------------------------------------------------------------ thread pool
//
// The task cell (a closure inside its future's state) and the queue that
// counts the workers by state, driven the way src/thread/worker.rs drives
// them: loom threads stand in for the pool's workers.

use concurrent_futures::__loom::{Job, Queue, Wake};

/// The worker loop of src/thread/worker.rs: runs jobs until the queue
/// closes; as a result is about to be published it takes the next job or
/// counts itself searching.
fn worker(queue: Arc<Queue<Job>>) {
    let mut seat = queue.seat();
    let mut next = seat.next();
    while let Some(job) = next {
        let mut prefetched = None;
        job.run(&mut |has_callbacks| {
            if !has_callbacks {
                prefetched = seat.finishing();
            }
        });
        next = match prefetched {
            Some(job) => Some(job),
            None => seat.next(),
        };
    }
}

/// Queues `job`; starts a worker thread if the queue asks for one.
fn push(queue: &Arc<Queue<Job>>, job: Job, threads: &mut Vec<thread::JoinHandle<()>>) -> Wake {
    let wake = queue.push(job).map_err(|_| "refused").unwrap();
    if wake == Wake::Spawn {
        let q = Arc::clone(queue);
        threads.push(thread::spawn(move || worker(q)));
    }
    wake
}

#[test]
fn task_cell_run_races_cancel() {
    check("task cell: run vs cancel", || {
        let dropped = Arc::new(AtomicUsize::new(0));
        let guard = DropCount(Arc::clone(&dropped));
        let (job, fut) = Job::new(move || {
            let _keep = &guard;
            7u32
        });
        let (calls, _) = counting_callback(&fut);
        let runner = thread::spawn(move || job.run(&mut |_| {}));
        let cancelled = fut.cancel();
        runner.join().unwrap();
        // The closure is dropped exactly once, run or not; the callback
        // runs once; the outcome matches what cancel() said.
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let expected = if cancelled {
            Err(Error::Cancelled)
        } else {
            Ok(7)
        };
        assert_eq!(fut.result(), expected);
    });
}

#[test]
fn task_cell_run_races_result() {
    check("task cell: run vs a thread blocked in result", || {
        let (job, fut) = Job::new(|| 3u32);
        let runner = thread::spawn(move || job.run(&mut |_| {}));
        // A blocked thread is a listener woken by unpark: a lost wake-up
        // is a loom deadlock.
        assert_eq!(fut.result(), Ok(3));
        runner.join().unwrap();
    });
}

#[test]
fn task_cell_dropped_races_result() {
    check("task cell: dropped unrun vs result", || {
        let (job, fut) = Job::new(|| 3u32);
        let dropper = thread::spawn(move || drop(job));
        assert!(matches!(fut.result(), Err(Error::BrokenPool(_))));
        dropper.join().unwrap();
    });
}

#[test]
fn sequential_submits_reuse_one_worker() {
    check("queue: submit, result, submit (one thread)", || {
        let queue = Arc::new(Queue::new(2));
        let mut threads = Vec::new();
        let (j1, f1) = Job::new(|| 1u32);
        assert_eq!(push(&queue, j1, &mut threads), Wake::Spawn);
        assert_eq!(f1.result(), Ok(1));
        // The worker counted itself searching before the result was
        // visible: whether it is still searching or already asleep, the
        // second task goes to it, never to a new thread.
        let (j2, f2) = Job::new(|| 2u32);
        assert_ne!(push(&queue, j2, &mut threads), Wake::Spawn);
        assert_eq!(f2.result(), Ok(2));
        queue.close();
        assert_eq!(threads.len(), 1);
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn two_submits_get_two_workers_or_one_free() {
    check("queue: 2 submits on 2 workers", || {
        let queue = Arc::new(Queue::new(2));
        let mut threads = Vec::new();
        let (j1, f1) = Job::new(|| 1u32);
        let (j2, f2) = Job::new(|| 2u32);
        assert_eq!(push(&queue, j1, &mut threads), Wake::Spawn);
        // A second thread only if the first is not already free again.
        push(&queue, j2, &mut threads);
        assert_eq!(f2.result(), Ok(2));
        assert_eq!(f1.result(), Ok(1));
        queue.close();
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn shutdown_wakes_a_sleeping_worker() {
    check("queue: close vs a worker going to sleep", || {
        let queue = Arc::new(Queue::new(1));
        let mut threads = Vec::new();
        let (j1, f1) = Job::new(|| 1u32);
        assert_eq!(push(&queue, j1, &mut threads), Wake::Spawn);
        assert_eq!(f1.result(), Ok(1));
        // The worker may be searching, asleep, or between the two: close
        // must reach it (else the join below is a loom deadlock).
        queue.close();
        for t in threads {
            t.join().unwrap();
        }
        let (j2, _f2) = Job::new(|| 2u32);
        assert!(queue.push(j2).is_err());
    });
}

/// Counts its drops.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
