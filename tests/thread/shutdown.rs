//! `ThreadPoolExecutor` shutdown, cancellation and drops: every closure and
//! result is dropped exactly once, and cancel() agrees with the outcome under
//! a race (docs/conformance.md S1-S7 on the thread pool).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    blocked_tasks, eventually, pool, recv, with_timeout, DropCounter, Gate, Token, LONG,
};
use concurrent_futures::{
    as_completed, wait, Error, Future, ReturnWhen, Shutdown, ThreadPoolExecutor,
};
use crossbeam_channel::{unbounded, Sender};

thread_local! {
    /// Reports the thread's exit, from its thread-local destructor.
    static EXIT_GUARD: RefCell<Option<ExitGuard>> = const { RefCell::new(None) };
}

struct ExitGuard(Sender<String>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let name = thread::current().name().unwrap_or("?").to_string();
        let _ = self.0.send(name);
    }
}

// -------------------------------------------------------------- shutdown --

#[test]
fn submit_after_shutdown_is_already_failed_with_shutdown() {
    // S1
    let pool = pool(2);
    pool.shutdown();
    let counter = DropCounter::new();
    let token = counter.token();
    let fut = pool.submit(move || drop(token));
    assert!(fut.done());
    assert_eq!(counter.dropped(), 1);
    assert_eq!(fut.result(), Err(Error::Shutdown));
    assert_eq!(pool.num_threads(), 0);
    // Idempotent.
    pool.shutdown();
    pool.shutdown_with(Shutdown {
        wait: false,
        cancel_futures: true,
    });
    assert_eq!(pool.submit(|| 1).result_timeout(LONG), Err(Error::Shutdown));
}

#[test]
fn dropping_the_pool_completes_the_submitted_work() {
    // S2
    let (futures, count) = with_timeout(LONG, || {
        let pool = pool(2);
        let count = Arc::new(AtomicUsize::new(0));
        let futures: Vec<_> = (0..10)
            .map(|i| {
                let count = Arc::clone(&count);
                pool.submit(move || {
                    thread::sleep(Duration::from_millis(2));
                    count.fetch_add(1, Ordering::SeqCst);
                    i
                })
            })
            .collect();
        drop(pool);
        (futures, count)
    });
    assert_eq!(count.load(Ordering::SeqCst), 10);
    for (i, mut f) in futures.into_iter().enumerate() {
        assert!(f.done());
        assert_eq!(f.result_timeout(LONG), Ok(i));
    }
}

#[test]
fn fifty_jobs_then_shutdown_leaves_every_result_available() {
    // S3
    let pool = pool(4);
    let futures: Vec<_> = (0..50u64)
        .map(|i| {
            pool.submit(move || {
                thread::sleep(Duration::from_micros(200));
                i * i
            })
        })
        .collect();
    with_timeout(LONG, move || pool.shutdown());
    for (i, mut f) in (0..50u64).zip(futures) {
        assert!(f.done());
        assert_eq!(f.result_timeout(LONG), Ok(i * i));
    }
}

#[test]
fn shutdown_cancel_futures_cancels_the_queued_and_finishes_the_running() {
    // S4: 2 running, 48 queued.
    let pool = pool(2);
    let gate = Gate::new();
    let (futures, started) = blocked_tasks(&pool, &gate, 50);
    let mut running = [recv(&started), recv(&started)];
    running.sort_unstable();
    assert_eq!(running, [0, 1]);
    // The last queued future's callback opens the gate, so the running
    // tasks finish only once everything else was cancelled.
    futures[49].add_done_callback(move |_| drop(gate));
    let pool = with_timeout(LONG, move || {
        pool.shutdown_with(Shutdown {
            wait: true,
            cancel_futures: true,
        });
        pool
    });
    assert_eq!(pool.num_threads(), 0);
    let cancelled = futures.iter().filter(|f| f.cancelled()).count();
    assert_eq!(cancelled, 48);
    // Cancelled futures count as done for wait and as_completed.
    let (done, not_done) = wait(&futures, Some(Duration::ZERO), ReturnWhen::AllCompleted);
    assert_eq!((done.len(), not_done.len()), (50, 0));
    let yielded = as_completed(&futures)
        .timeout(Duration::ZERO)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(yielded.len(), 50);
    let outcomes: Vec<_> = futures.into_iter().map(Future::result).collect();
    assert_eq!(outcomes[..2], [Ok(0), Ok(1)]);
    assert!(outcomes[2..].iter().all(|r| *r == Err(Error::Cancelled)));
}

#[test]
fn callbacks_of_futures_cancelled_by_shutdown_may_submit() {
    // S4: a done-callback run by shutdown(cancel_futures) can use the pool.
    let pool = Arc::new(pool(1));
    let mut gate = Gate::new();
    let (blocker, started) = blocked_tasks(&pool, &gate, 1);
    recv(&started);
    let mut queued = pool.submit(|| 1);
    let (tx, resubmitted) = unbounded();
    let p = Arc::clone(&pool);
    queued.add_done_callback(move |_| tx.send(p.submit(|| 2)).unwrap());
    let p = Arc::clone(&pool);
    with_timeout(LONG, move || {
        p.shutdown_with(Shutdown {
            wait: false,
            cancel_futures: true,
        })
    });
    assert_eq!(queued.result_timeout(LONG), Err(Error::Cancelled));
    assert_eq!(
        recv(&resubmitted).result_timeout(LONG),
        Err(Error::Shutdown)
    );
    gate.open();
    assert!(blocker
        .into_iter()
        .all(|mut f| f.result_timeout(LONG) == Ok(0)));
}

#[test]
fn shutdown_without_wait_returns_at_once() {
    // S5
    let pool = pool(1);
    let mut gate = Gate::new();
    let (futures, started) = blocked_tasks(&pool, &gate, 1);
    recv(&started);
    let start = Instant::now();
    pool.shutdown_with(Shutdown {
        wait: false,
        cancel_futures: false,
    });
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(pool.submit(|| 0).result_timeout(LONG), Err(Error::Shutdown));
    // The running task still completes, and a later wait joins its thread.
    gate.open();
    let mut fut = futures.into_iter().next().unwrap();
    assert_eq!(fut.result_timeout(LONG), Ok(0));
    let pool = with_timeout(LONG, move || {
        pool.shutdown();
        pool
    });
    assert_eq!(pool.num_threads(), 0);
    with_timeout(LONG, move || drop(pool));
}

#[test]
fn submit_cancel_shutdown_does_not_hang() {
    // S6
    with_timeout(LONG, || {
        let pool = pool(1);
        let mut fut = pool.submit(|| thread::sleep(Duration::from_millis(5)));
        let mut queued = pool.submit(|| 1);
        let cancelled = queued.cancel();
        pool.shutdown();
        assert_eq!(fut.result_timeout(LONG), Ok(()));
        if cancelled {
            assert_eq!(queued.result_timeout(LONG), Err(Error::Cancelled));
        } else {
            assert_eq!(queued.result_timeout(LONG), Ok(1));
        }
    });
}

#[test]
fn shutdown_joins_every_worker_thread() {
    // S7: each worker's thread-local destructors ran before shutdown returned.
    let (exit_tx, exited) = unbounded();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(3)
        .thread_name_prefix("joined")
        .initializer(move || {
            EXIT_GUARD.with(|g| *g.borrow_mut() = Some(ExitGuard(exit_tx.clone())));
        })
        .build()
        .unwrap();
    let mut gate = Gate::new();
    let (_futures, started) = blocked_tasks(&pool, &gate, 3);
    for _ in 0..3 {
        recv(&started);
    }
    assert_eq!(pool.num_threads(), 3);
    gate.open();
    let pool = with_timeout(LONG, move || {
        pool.shutdown();
        pool
    });
    assert_eq!(pool.num_threads(), 0);
    let gone: BTreeSet<String> = exited.try_iter().collect();
    assert_eq!(
        gone,
        BTreeSet::from(["joined_0".to_string(), "joined_1".into(), "joined_2".into()])
    );
}

// ------------------------------------------------- drops and races --------

#[test]
fn closures_and_results_are_dropped_exactly_once() {
    let closures = DropCounter::new();
    let results = DropCounter::new();
    let pool = pool(2);

    // Submitted: the closure is gone when the result is available.
    let (token, result) = (closures.token(), results.token());
    let mut fut = pool.submit(move || {
        drop(token);
        result
    });
    let value = fut.result_timeout(LONG).unwrap();
    assert_eq!(closures.dropped(), 1);
    assert_eq!(results.dropped(), 0);
    drop(value);
    assert_eq!(results.dropped(), 1);

    // A result nobody takes is dropped with its future.
    let result = results.token();
    let fut = pool.submit(move || result);
    assert!(fut.wait_timeout(LONG));
    drop(fut);
    eventually("an untaken result is dropped", || results.dropped() == 2);

    // Cancelled while queued: the closure is dropped, never run.
    let mut gate = Gate::new();
    let (blocked, started) = blocked_tasks(&pool, &gate, 2);
    recv(&started);
    recv(&started);
    let token = closures.token();
    let cancelled = pool.submit(move || drop(token));
    assert!(cancelled.cancel());
    drop(cancelled);

    // Mapped: every argument, every result and the function itself.
    let (args, f_counter) = (DropCounter::new(), DropCounter::new());
    let f_token = f_counter.token();
    let r = results.clone();
    let inputs: Vec<Token> = (0..10).map(|_| args.token()).collect();
    gate.open();
    let outputs: Vec<Token> = pool
        .map(
            move |t: Token| {
                std::hint::black_box(&f_token);
                drop(t);
                r.token()
            },
            inputs,
        )
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(args.dropped(), 10);
    assert_eq!(f_counter.dropped(), 1);
    assert_eq!(results.dropped(), 2);
    drop(outputs);
    assert_eq!(results.dropped(), 12);

    // A map given up early: its unstarted tasks and its unpulled input.
    let mut gate = Gate::new();
    let (more_blocked, started) = blocked_tasks(&pool, &gate, 2);
    recv(&started);
    recv(&started);
    let inputs: Vec<Token> = (0..10).map(|_| args.token()).collect();
    let mut early = pool.map(drop, inputs).buffersize(3).timeout(Duration::ZERO);
    assert_eq!(early.next(), Some(Err(Error::timeout())));
    drop(early);
    gate.open();

    // Shut down with queued work cancelled, then submit after shutdown.
    let mut gate = Gate::new();
    let (last_blocked, started) = blocked_tasks(&pool, &gate, 2);
    recv(&started);
    recv(&started);
    let queued: Vec<_> = (0..5)
        .map(|_| {
            let token = closures.token();
            pool.submit(move || drop(token))
        })
        .collect();
    pool.shutdown_with(Shutdown {
        wait: false,
        cancel_futures: true,
    });
    assert_eq!(closures.dropped(), 1 + 1 + 5);
    let token = closures.token();
    let refused = pool.submit(move || drop(token));
    assert_eq!(closures.dropped(), 1 + 1 + 5 + 1);
    gate.open();
    with_timeout(LONG, move || pool.shutdown());

    assert!(queued.iter().all(Future::cancelled));
    assert_eq!(refused.result(), Err(Error::Shutdown));
    for mut f in blocked.into_iter().chain(more_blocked).chain(last_blocked) {
        assert!(f.result_timeout(LONG).is_ok());
    }
    assert_eq!(closures.dropped(), 8);
    assert_eq!(args.dropped(), 20);
    assert_eq!(results.dropped(), 12);
}

#[test]
fn submit_and_cancel_race_agrees_with_the_outcomes() {
    // 10,000 tasks on a busy 2-worker pool, cancelled from another thread as
    // soon as they are submitted: `cancel()` returned true exactly for the
    // futures that ended Cancelled, and every future resolved.
    let n = if cfg!(miri) { 100 } else { 10_000 };
    let pool = pool(2);
    let executed = Arc::new(AtomicUsize::new(0));
    let (handles_tx, handles) = unbounded();
    let canceller = thread::spawn(move || {
        handles
            .iter()
            .map(|(i, h): (usize, concurrent_futures::CancelHandle)| (i, h.cancel()))
            .collect::<Vec<_>>()
    });
    let futures: Vec<_> = (0..n)
        .map(|i| {
            let executed = Arc::clone(&executed);
            let fut = pool.submit(move || {
                // A little work, so that the queue is sometimes non-empty.
                let mut x = i as u64;
                for _ in 0..50 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                executed.fetch_add(1, Ordering::SeqCst);
                (i, x)
            });
            handles_tx.send((i, fut.cancel_handle())).unwrap();
            fut
        })
        .collect();
    drop(handles_tx);
    let cancels = canceller.join().unwrap();
    assert_eq!(cancels.len(), n);
    let mut ok = 0;
    for ((i, cancelled), mut fut) in cancels.into_iter().zip(futures) {
        match fut.result_timeout(LONG) {
            Err(Error::Cancelled) => {
                assert!(cancelled, "future {i} cancelled but cancel() was false")
            }
            Ok((j, _)) => {
                assert!(!cancelled, "future {i} ran but cancel() was true");
                assert_eq!(j, i);
                ok += 1;
            }
            other => panic!("future {i}: unexpected {other:?}"),
        }
    }
    with_timeout(LONG, move || pool.shutdown());
    assert_eq!(executed.load(Ordering::SeqCst), ok);
}

/// Two threads calling `shutdown()` at once both return only once the
/// submitted work is done (the second used to return at once).
#[test]
fn concurrent_shutdowns_both_wait_for_the_work() {
    with_timeout(LONG, || {
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
