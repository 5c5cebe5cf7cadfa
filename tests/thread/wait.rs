//! `wait`: partitioning futures into done and not done (docs/conformance.md W1-W7).

use std::thread;
use std::time::{Duration, Instant};

use crate::common::{recv, with_timeout, Gate, LONG};
use concurrent_futures::{wait, Error, Future, Promise, ReturnWhen, ThreadPoolExecutor};
use crossbeam_channel::{unbounded, TryRecvError};

const ALL: ReturnWhen = ReturnWhen::AllCompleted;
const FIRST: ReturnWhen = ReturnWhen::FirstCompleted;
const FIRST_EXCEPTION: ReturnWhen = ReturnWhen::FirstException;

/// True if both slices hold exactly the given futures, in that order.
fn same(got: &[&Future<u32>], want: &[&Future<u32>]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(a, b)| std::ptr::eq(*a, *b))
}

fn failed() -> Future<u32> {
    Future::ready(Err(Error::Panicked {
        message: "failed".into(),
        location: None,
        backtrace: None,
    }))
}

#[test]
fn duplicates_collapse() {
    // W1
    let f = Future::ready(Ok(1));
    let (done, not_done) = wait([&f, &f], None, ALL);
    assert!(same(&done, &[&f]));
    assert!(not_done.is_empty());

    let (_promise, pending) = Promise::new();
    let (done, not_done) = wait([&pending, &f, &pending], Some(Duration::ZERO), ALL);
    assert!(same(&done, &[&f]));
    assert!(same(&not_done, &[&pending]));
}

#[test]
fn first_completed_returns_at_once_with_finished_inputs() {
    // W2: no timeout, and one input never finishes.
    let (promise, pending) = Promise::new();
    let finished = Future::ready(Ok(2));
    let (done, not_done) = with_timeout(LONG, move || wait(vec![pending, finished], None, FIRST));
    assert_eq!(done.len(), 1);
    assert_eq!(done.into_iter().next().unwrap().result(), Ok(2));
    assert_eq!(not_done.len(), 1);
    assert!(!not_done[0].done());
    drop(promise);

    let a = Future::ready(Ok(1));
    let b = Future::ready(Ok(2));
    let (done, not_done) = wait([&a, &b], None, FIRST);
    assert!(same(&done, &[&a, &b]));
    assert!(not_done.is_empty());
}

#[test]
fn first_completed_wakes_when_one_finishes() {
    let (p1, f1) = Promise::new();
    let (_p2, f2) = Promise::<u32>::new();
    let completer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        p1.complete(Ok(1)).unwrap();
    });
    let (done, not_done) = with_timeout(LONG, move || wait(vec![f1, f2], None, FIRST));
    completer.join().unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(not_done.len(), 1);
    assert_eq!(done.into_iter().next().unwrap().result(), Ok(1));
}

#[test]
fn first_exception_returns_when_the_first_task_fails() {
    // W3
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let ok = pool.submit(|| 1u32);
    assert!(ok.wait_timeout(LONG));
    let mut fail_gate = Gate::new();
    let g = fail_gate.waiter();
    let failing = pool.submit(move || -> u32 {
        assert!(g.wait());
        panic!("first failure")
    });
    let mut block_gate = Gate::new();
    let g = block_gate.waiter();
    let blocked = pool.submit(move || -> u32 {
        assert!(g.wait());
        3
    });
    let (tx, rx) = unbounded();
    let waiter = thread::spawn(move || {
        tx.send(wait(
            vec![ok, failing, blocked],
            Some(LONG),
            FIRST_EXCEPTION,
        ))
        .unwrap();
    });
    // A success alone does not end the wait.
    thread::sleep(Duration::from_millis(30));
    assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
    fail_gate.open();
    let (done, not_done) = recv(&rx);
    waiter.join().unwrap();

    assert_eq!(done.len(), 2);
    let mut done = done.into_iter();
    assert_eq!(done.next().unwrap().result(), Ok(1));
    match done.next().unwrap().result() {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "first failure"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(not_done.len(), 1);
    assert!(!not_done[0].done());
    block_gate.open();
    let mut blocked = not_done.into_iter().next().unwrap();
    assert_eq!(blocked.result_timeout(LONG), Ok(3));
}

#[test]
fn first_exception_returns_at_once_if_an_input_already_failed() {
    // W4
    let (promise, pending) = Promise::new();
    let (done, not_done) = with_timeout(LONG, move || {
        wait(
            vec![pending, failed(), Future::ready(Ok(1))],
            None,
            FIRST_EXCEPTION,
        )
    });
    assert_eq!(done.len(), 2);
    assert!(matches!(done[0].exception(), Some(Error::Panicked { .. })));
    assert_eq!(done[1].exception(), None);
    assert_eq!(not_done.len(), 1);
    assert!(!not_done[0].done());
    drop(promise);
}

#[test]
fn first_exception_does_not_count_a_cancel_as_a_failure() {
    let (_p1, cancelled) = Promise::<u32>::new();
    assert!(cancelled.cancel());
    let (_p2, pending) = Promise::<u32>::new();
    let start = Instant::now();
    let (done, not_done) = wait(
        [&cancelled, &pending],
        Some(Duration::from_millis(50)),
        FIRST_EXCEPTION,
    );
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(same(&done, &[&cancelled]));
    assert!(same(&not_done, &[&pending]));

    // Without any failure it is the same as AllCompleted.
    let a = Future::ready(Ok(1));
    let (done, not_done) = wait([&a, &cancelled], None, FIRST_EXCEPTION);
    assert!(same(&done, &[&a, &cancelled]));
    assert!(not_done.is_empty());
}

#[test]
fn all_completed_counts_failed_and_cancelled_futures_as_done() {
    // W5
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let mut gate = Gate::new();
    let g = gate.waiter();
    let ok = pool.submit(move || {
        assert!(g.wait());
        1u32
    });
    let panicking = pool.submit(|| -> u32 { panic!("no") });
    let cancelled = pool.submit(|| 3u32);
    assert!(cancelled.cancel());
    gate.open();
    let futures = vec![ok, panicking, cancelled];
    let (done, not_done) = with_timeout(LONG, move || wait(futures, None, ALL));
    assert!(not_done.is_empty());
    let outcomes: Vec<_> = done.into_iter().map(Future::result).collect();
    assert_eq!(outcomes[0], Ok(1));
    assert!(matches!(outcomes[1], Err(Error::Panicked { .. })));
    assert_eq!(outcomes[2], Err(Error::Cancelled));
}

#[test]
fn blocked_future_is_not_done_after_the_timeout() {
    // W6
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let mut gate = Gate::new();
    let g = gate.waiter();
    let blocked = pool.submit(move || {
        assert!(g.wait());
        2u32
    });
    let quick = pool.submit(|| 1u32);
    for return_when in [ALL, FIRST_EXCEPTION] {
        let start = Instant::now();
        let (done, not_done) = wait(
            [&quick, &blocked],
            Some(Duration::from_millis(50)),
            return_when,
        );
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(50), "took {took:?}");
        assert!(took < LONG, "took {took:?}");
        assert!(same(&done, &[&quick]));
        assert!(same(&not_done, &[&blocked]));
    }
    let (done, not_done) = wait([&blocked], Some(Duration::ZERO), FIRST);
    assert!(done.is_empty());
    assert!(same(&not_done, &[&blocked]));
    gate.open();
    let (done, not_done) = wait([&quick, &blocked], Some(LONG), ALL);
    assert!(same(&done, &[&quick, &blocked]));
    assert!(not_done.is_empty());
}

#[test]
fn hundred_futures_on_a_thread_pool_never_hang() {
    // W7: a lost wake-up here would hang `wait` forever.
    let rounds = if cfg!(miri) { 2 } else { 50 };
    with_timeout(LONG, move || {
        let pool = ThreadPoolExecutor::new(4).unwrap();
        for round in 0..rounds {
            let futures: Vec<_> = (0..100u32)
                .map(|i| pool.submit(move || i + round))
                .collect();
            let (done, not_done) = wait(futures, None, ALL);
            assert_eq!(done.len(), 100);
            assert!(not_done.is_empty());
            let sum: u32 = done.into_iter().map(|f| f.result().unwrap()).sum();
            assert_eq!(sum, 4950 + 100 * round);
        }
    });
}

#[test]
fn empty_input_returns_at_once() {
    for return_when in [ALL, FIRST, FIRST_EXCEPTION] {
        let none: Vec<Future<u32>> = Vec::new();
        let (done, not_done) = with_timeout(LONG, move || wait(none, None, return_when));
        assert!(done.is_empty() && not_done.is_empty());
    }
}

#[test]
fn cancel_from_another_thread_ends_an_all_completed_wait() {
    let (_promise, pending) = Promise::<u32>::new();
    let handle = pending.cancel_handle();
    let canceller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        assert!(handle.cancel());
    });
    let (done, not_done) = with_timeout(LONG, move || wait(vec![pending], None, ALL));
    canceller.join().unwrap();
    assert!(not_done.is_empty());
    assert_eq!(
        done.into_iter().next().unwrap().result(),
        Err(Error::Cancelled)
    );
}

// Issue 9: `(key, future)` pairs, as Python's `{submit(..): key}`.
#[test]
fn accepts_key_future_pairs_and_returns_the_pairs() {
    let (_promise, pending) = Promise::<u32>::new();
    let pairs = vec![
        ("done", Future::ready(Ok(1))),
        ("pending", pending),
        ("failed", failed()),
    ];
    let (done, not_done) = wait(pairs, Some(Duration::ZERO), ALL);
    let done_keys: Vec<&str> = done.iter().map(|(k, _)| *k).collect();
    assert_eq!(done_keys, ["done", "failed"]);
    assert_eq!(not_done.len(), 1);
    assert_eq!(not_done[0].0, "pending");
    let (_, fut) = done.into_iter().next().unwrap();
    assert_eq!(fut.result(), Ok(1));
}

#[test]
fn accepts_a_hash_map_of_futures_by_reference() {
    let mut jobs = std::collections::HashMap::new();
    jobs.insert("a".to_string(), Future::ready(Ok(1u32)));
    jobs.insert("b".to_string(), failed());
    let (done, not_done) = wait(&jobs, None, FIRST_EXCEPTION);
    assert_eq!(done.len(), 2);
    assert!(not_done.is_empty());
    let mut keys: Vec<&String> = done.iter().map(|(k, _)| *k).collect();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
}
