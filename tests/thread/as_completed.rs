//! `as_completed`: completion order, de-duplication, timeouts, no leaks,
//! and its `Stream` side (docs/conformance.md A1-A5, F11).

use std::thread;
use std::time::{Duration, Instant};

use crate::common::{eventually, recv, with_timeout, DropCounter, Gate, Token, LONG};
use concurrent_futures::{as_completed, Error, Future, Promise, ThreadPoolExecutor};
use crossbeam_channel::unbounded;

/// A pool of one worker running a task blocked on the returned gate, and
/// the future of that task (it returns `value` once the gate opens).
fn running_task(value: u32) -> (ThreadPoolExecutor, Gate, Future<u32>) {
    let pool = ThreadPoolExecutor::new(1).unwrap();
    let gate = Gate::new();
    let (started_tx, started) = unbounded();
    let g = gate.waiter();
    let fut = pool.submit(move || {
        started_tx.send(()).unwrap();
        assert!(g.wait());
        value
    });
    recv(&started);
    (pool, gate, fut)
}

#[test]
fn yields_finished_cancelled_and_running_futures() {
    // A1
    let (pool, mut gate, running) = running_task(3);
    let cancelled = pool.submit(|| 2);
    assert!(cancelled.cancel());
    let finished = Future::ready(Ok(1));
    let out = with_timeout(LONG, move || {
        let mut it = as_completed(vec![running, cancelled, finished]);
        assert_eq!(it.len(), 3);
        // The already-done ones first, in input order.
        let first = it.next().unwrap().result();
        let second = it.next().unwrap().result();
        assert_eq!(it.remaining(), 1);
        gate.open();
        let third = it.next().unwrap().result();
        assert!(it.next().is_none());
        vec![first, second, third]
    });
    assert_eq!(out, vec![Err(Error::Cancelled), Ok(1), Ok(3)]);
}

#[test]
fn yields_futures_in_completion_order() {
    // A1: the pending ones come as they finish.
    let promises: Vec<_> = (0..4).map(|_| Promise::<usize>::new()).collect();
    let (promises, futures): (Vec<_>, Vec<_>) = promises.into_iter().unzip();
    let (ack_tx, ack) = unbounded::<()>();
    let order = [2, 0, 3, 1];
    let completer = thread::spawn(move || {
        for i in order {
            promises[i].complete(Ok(i)).unwrap();
            // Wait until the consumer took it, so the order is exact.
            recv(&ack);
        }
    });
    let got = with_timeout(LONG, move || {
        as_completed(futures)
            .map(|f| {
                let v = f.result().unwrap();
                ack_tx.send(()).unwrap();
                v
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(got, order);
    completer.join().unwrap();
}

#[test]
fn zero_timeout_yields_only_the_finished_futures_then_timeout() {
    // A2
    let (pool, mut gate, running) = running_task(0);
    let queued = pool.submit(|| 0);
    let futures = vec![Future::ready(Ok(1)), running, Future::ready(Ok(2)), queued];
    let mut it = as_completed(&futures).timeout(Duration::ZERO);
    assert!(it.next().unwrap().unwrap().done());
    assert!(it.next().unwrap().unwrap().done());
    assert_eq!(
        it.next().unwrap().unwrap_err(),
        Error::Timeout {
            unfinished: 2,
            total: 4
        }
    );
    assert!(it.next().is_none());
    assert!(it.next().is_none());
    drop(it);
    gate.open();
    for f in futures {
        assert_eq!(f.exception_timeout(LONG), Ok(None));
    }
}

#[test]
fn short_timeout_waits_that_long_then_times_out() {
    // A2: 100 ms.
    let (_pool, mut gate, running) = running_task(0);
    let done = Future::ready(Ok(5));
    let start = Instant::now();
    let mut it = as_completed([&done, &running]).timeout(Duration::from_millis(100));
    assert_eq!(it.next().unwrap().unwrap().exception(), None);
    assert_eq!(
        it.next().unwrap().unwrap_err(),
        Error::Timeout {
            unfinished: 1,
            total: 2
        }
    );
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(100), "took {took:?}");
    assert!(took < LONG, "took {took:?}");
    assert!(it.next().is_none());
    gate.open();
}

#[test]
fn timeout_is_measured_from_the_call() {
    // A2: the deadline does not restart with each item.
    let (_pool, mut gate, running) = running_task(0);
    let mut it = as_completed([&running]).timeout(Duration::from_millis(200));
    thread::sleep(Duration::from_millis(250));
    let start = Instant::now();
    assert_eq!(it.next().unwrap().unwrap_err(), Error::timeout());
    // Already past the deadline: no fresh 200 ms wait.
    let took = start.elapsed();
    assert!(took < Duration::from_millis(150), "took {took:?}");
    gate.open();
}

#[test]
fn same_future_passed_three_times_is_yielded_once() {
    // A3
    let f = Future::ready(Ok(1));
    let got: Vec<_> = as_completed([&f, &f, &f]).collect();
    assert_eq!(got.len(), 1);
    assert!(std::ptr::eq(got[0], &f));

    // And counted once in a timeout.
    let (_promise, pending) = Promise::<u8>::new();
    let mut it = as_completed([&pending, &f, &pending, &f]).timeout(Duration::ZERO);
    assert!(std::ptr::eq(it.next().unwrap().unwrap(), &f));
    assert_eq!(
        it.next().unwrap().unwrap_err(),
        Error::Timeout {
            unfinished: 1,
            total: 2
        }
    );
    assert!(it.next().is_none());
}

#[test]
fn does_not_keep_yielded_futures_alive() {
    // A4: a yielded future and its result are the caller's alone.
    let counter = DropCounter::new();
    let futures: Vec<Future<Token>> = (0..3)
        .map(|_| {
            let (promise, fut) = Promise::new();
            promise.complete(Ok(counter.token())).unwrap();
            fut
        })
        .collect();
    let mut it = as_completed(futures);
    for i in 1..=3 {
        drop(it.next().unwrap());
        assert_eq!(counter.dropped(), i);
    }
    assert!(it.next().is_none());

    // The same for futures that finish on a pool while the iterator waits.
    let pool = ThreadPoolExecutor::new(2).unwrap();
    let counter = DropCounter::new();
    let futures: Vec<_> = (0..3)
        .map(|_| {
            let token = counter.token();
            pool.submit(move || token)
        })
        .collect();
    let mut it = as_completed(futures).timeout(LONG);
    for i in 1..=3 {
        drop(it.next().unwrap().unwrap());
        // The worker lets go of the shared state right after completing it.
        eventually("the yielded result is dropped", || counter.dropped() == i);
    }
}

#[test]
fn timeout_error_says_how_many_of_how_many_are_unfinished() {
    // A5
    let (_p1, pending1) = Promise::<u8>::new();
    let (_p2, pending2) = Promise::<u8>::new();
    let futures = vec![
        pending1,
        Future::ready(Ok(1)),
        pending2,
        Future::ready(Err(Error::Shutdown)),
    ];
    let err = as_completed(&futures)
        .timeout(Duration::ZERO)
        .find_map(Result::err)
        .unwrap();
    assert_eq!(
        err,
        Error::Timeout {
            unfinished: 2,
            total: 4
        }
    );
    assert_eq!(err.to_string(), "timed out: 2 (of 4) futures unfinished");
    assert!(err.is_timeout());
}

#[test]
fn empty_input_yields_nothing() {
    let none: Vec<Future<u8>> = Vec::new();
    assert!(as_completed(&none).next().is_none());
    assert!(as_completed(none).timeout(Duration::ZERO).next().is_none());
}

#[test]
fn mutable_references_come_back_usable() {
    let mut futures = [Future::ready(Ok(1)), Future::ready(Ok(2))];
    let mut sum = 0;
    for f in as_completed(futures.iter_mut()) {
        sum += f.result_timeout(Duration::ZERO).unwrap();
    }
    assert_eq!(sum, 3);
    assert!(futures.iter().all(Future::done));
}

#[test]
fn dropping_the_iterator_early_leaves_the_futures_working() {
    let (promise, pending) = Promise::<u8>::new();
    let mut it = as_completed([&pending]).timeout(Duration::ZERO);
    assert!(it.next().unwrap().is_err());
    drop(it);
    promise.complete(Ok(8)).unwrap();
    assert_eq!(pending.result(), Ok(8));
}

#[test]
fn ten_thousand_futures_each_come_once() {
    // A1 at scale: no polling loop, no lost or doubled wake-up.
    let n = if cfg!(miri) { 50 } else { 10_000 };
    let (promises, futures): (Vec<_>, Vec<_>) = (0..n).map(|_| Promise::new()).unzip();
    let completer = thread::spawn(move || {
        // Complete them out of order.
        for (i, p) in promises.iter().enumerate().rev().step_by(2) {
            p.complete(Ok(i)).unwrap();
        }
        for (i, p) in promises.iter().enumerate().rev().skip(1).step_by(2) {
            p.complete(Ok(i)).unwrap();
        }
    });
    let mut got = with_timeout(LONG, move || {
        as_completed(futures)
            .map(|f| f.result().unwrap())
            .collect::<Vec<_>>()
    });
    completer.join().unwrap();
    got.sort_unstable();
    assert_eq!(got, (0..n).collect::<Vec<_>>());
}

#[test]
fn as_completed_is_a_stream_in_completion_order() {
    // F11: AsCompleted as a `futures::Stream`.
    use futures::StreamExt;
    let (promises, futures): (Vec<_>, Vec<_>) = (0..3).map(|_| Promise::<usize>::new()).unzip();
    let done_first = Future::ready(Ok(9));
    let (ack_tx, ack) = unbounded::<()>();
    let order = [1, 2, 0];
    let completer = thread::spawn(move || {
        for i in order {
            // Let the stream go pending first.
            thread::sleep(Duration::from_millis(5));
            promises[i].complete(Ok(i)).unwrap();
            recv(&ack);
        }
    });
    let got = with_timeout(LONG, move || {
        futures::executor::block_on(async move {
            let mut stream = as_completed(std::iter::once(done_first).chain(futures));
            let mut got = Vec::new();
            // `AsCompleted` is also an `Iterator`, so name the trait.
            while let Some(f) = StreamExt::next(&mut stream).await {
                got.push(f.await.unwrap());
                if got.len() > 1 {
                    ack_tx.send(()).unwrap();
                }
            }
            got
        })
    });
    assert_eq!(got, [9, 1, 2, 0]);
    completer.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_completed_stream_under_tokio_yields_every_pool_future() {
    // F11
    use futures::StreamExt;
    let pool = ThreadPoolExecutor::new(3).unwrap();
    let futures: Vec<_> = (0..20u64)
        .map(|i| {
            pool.submit(move || {
                thread::sleep(Duration::from_millis(i % 4));
                i
            })
        })
        .collect();
    let mut got: Vec<u64> = tokio::time::timeout(
        LONG,
        as_completed(futures)
            .then(|f| async move { f.await.unwrap() })
            .collect::<Vec<_>>(),
    )
    .await
    .expect("hung");
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    tokio::task::spawn_blocking(move || drop(pool))
        .await
        .unwrap();
}

// Issue 9: Python's `future_to_url = {executor.submit(load_url, url): url}`.
#[test]
fn yields_key_future_pairs_in_completion_order() {
    with_timeout(LONG, || {
        let pool = ThreadPoolExecutor::new(2).unwrap();
        let mut gate = Gate::new();
        let g = gate.waiter();
        let slow = pool.submit(move || {
            assert!(g.wait());
            "slow page".len()
        });
        let fast = pool.submit(|| "fast".len());
        let pairs = vec![("http://slow", slow), ("http://fast", fast)];
        let mut it = as_completed(pairs);
        let (url, fut) = it.next().unwrap();
        assert_eq!(url, "http://fast");
        assert_eq!(fut.result(), Ok(4));
        gate.open();
        let (url, fut) = it.next().unwrap();
        assert_eq!(url, "http://slow");
        assert_eq!(fut.result(), Ok(9));
        assert!(it.next().is_none());
    });
}

#[test]
fn pairs_sharing_a_future_by_reference_are_yielded_once() {
    let f = Future::ready(Ok(7u8));
    let pairs = [(1, &f), (2, &f)];
    let keys: Vec<i32> = as_completed(pairs).map(|(k, _)| k).collect();
    assert_eq!(keys, [1]);
}
