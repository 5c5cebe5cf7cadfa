//! `ThreadPoolExecutor::map`: order, laziness, the in-flight window,
//! timeouts, failures and drops (docs/conformance.md E2-E13 on the thread pool).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{counted, pool, recv, with_timeout, DropCounter, Gate, Ran, Waiter, LONG};
use concurrent_futures::{Error, ThreadPoolExecutor};
use crossbeam_channel::unbounded;

// ------------------------------------------------------------------- map --

#[test]
fn map_equals_a_sequential_map_in_input_order() {
    // E2: with and without chunksize 3.
    let pool = pool(4);
    let f = |x: u64| {
        // Later items finish first.
        thread::sleep(Duration::from_micros((50 - x) * 20));
        x * x + 1
    };
    let expected: Vec<u64> = (0..50).map(f).collect();
    let plain: Vec<u64> = pool.map(f, 0..50).collect::<Result<_, _>>().unwrap();
    assert_eq!(plain, expected);
    for chunk in [1, 3, 7, 50, 100] {
        let chunked: Vec<u64> = pool
            .map(f, 0..50)
            .chunksize(chunk)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(chunked, expected, "chunksize {chunk}");
    }
}

#[test]
fn map_yields_a_failure_at_its_position_then_ends_and_cancels_the_rest() {
    // E3
    let pool = pool(1);
    let mut gate = Gate::new();
    let waiter = gate.waiter();
    let ran = Ran::default();
    let r = ran.clone();
    let (started4_tx, started4) = unbounded();
    let (input, pulled) = counted(0..100);
    let mut it = pool
        .map(
            move |x: usize| {
                r.push(x);
                match x {
                    3 => panic!("three"),
                    4 => {
                        started4_tx.send(()).unwrap();
                        assert!(waiter.wait());
                    }
                    _ => {}
                }
                x
            },
            input,
        )
        .buffersize(2);
    assert_eq!(it.next(), Some(Ok(0)));
    assert_eq!(it.next(), Some(Ok(1)));
    assert_eq!(it.next(), Some(Ok(2)));
    // One worker: 3 failed and 4 is running; 5 is queued behind it.
    recv(&started4);
    match it.next() {
        Some(Err(Error::Panicked { message, .. })) => assert_eq!(message, "three"),
        other => panic!("unexpected {other:?}"),
    }
    let pulled_at_error = pulled.load(Ordering::SeqCst);
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    assert_eq!(pulled.load(Ordering::SeqCst), pulled_at_error);
    gate.open();
    drop(it);
    pool.shutdown();
    assert_eq!(ran.get(), [0, 1, 2, 3, 4]);
}

#[test]
fn map_timeout_yields_timeout_on_the_slow_item_then_stays_finished() {
    // E4: [0 s, 0 s, blocked] with a 200 ms timeout (5 s and 6 s in CPython).
    let pool = pool(3);
    let mut gate = Gate::new();
    let items: Vec<Option<Waiter>> = vec![None, None, Some(gate.waiter())];
    let start = Instant::now();
    let mut it = pool
        .map(
            |w: Option<Waiter>| {
                if let Some(w) = w {
                    assert!(w.wait());
                }
            },
            items,
        )
        .timeout(Duration::from_millis(200));
    assert_eq!(it.next(), Some(Ok(())));
    assert_eq!(it.next(), Some(Ok(())));
    assert_eq!(it.next(), Some(Err(Error::timeout())));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200), "took {took:?}");
    assert!(took < LONG, "took {took:?}");
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    gate.open();
}

#[test]
fn map_timeout_is_measured_from_the_map_call() {
    // E4: the deadline is fixed when `map` is called, not at the first next().
    let pool = pool(1);
    let gate = Gate::new();
    let waiter = gate.waiter();
    let mut it = pool
        .map(move |_: u8| assert!(waiter.wait()), [1])
        .timeout(Duration::from_millis(200));
    thread::sleep(Duration::from_millis(250));
    let start = Instant::now();
    assert_eq!(it.next(), Some(Err(Error::timeout())));
    let took = start.elapsed();
    assert!(took < Duration::from_millis(150), "took {took:?}");
    assert_eq!(it.next(), None);
}

#[test]
fn dropped_map_cancels_the_tasks_not_started() {
    // E5
    let pool = pool(1);
    let mut gate = Gate::new();
    let waiter = gate.waiter();
    let ran = Ran::default();
    let r = ran.clone();
    let (started1_tx, started1) = unbounded();
    let mut it = pool
        .map(
            move |x: usize| {
                r.push(x);
                if x == 1 {
                    started1_tx.send(()).unwrap();
                    assert!(waiter.wait());
                }
                x
            },
            0..10,
        )
        .buffersize(4);
    assert_eq!(it.next(), Some(Ok(0)));
    recv(&started1);
    // 2, 3, 4 and 5 are queued behind the running 1.
    drop(it);
    gate.open();
    pool.shutdown();
    assert_eq!(ran.get(), [0, 1]);
}

#[test]
fn buffersize_1_2_n_and_2n_give_ordered_results() {
    // E6
    let pool = pool(4);
    let n = 20;
    let f = move |x: usize| {
        thread::sleep(Duration::from_micros(((n - x) % 5) as u64 * 200));
        x * 3
    };
    let expected: Vec<usize> = (0..n).map(f).collect();
    for b in [1, 2, n, 2 * n] {
        let got: Vec<usize> = pool
            .map(f, 0..n)
            .buffersize(b)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, expected, "buffersize {b}");
    }
}

#[test]
fn map_over_an_endless_input_with_buffersize_2_yields_0_1_2() {
    // E7
    let pool = pool(2);
    let (input, pulled) = counted(0..);
    let got = with_timeout(LONG, move || {
        let first: Vec<usize> = pool
            .map(|x: usize| x, input)
            .buffersize(2)
            .take(3)
            .collect::<Result<_, _>>()
            .unwrap();
        first
    });
    assert_eq!(got, [0, 1, 2]);
    // Bounded: at most buffersize + 1 beyond the 3 taken.
    assert!(pulled.load(Ordering::SeqCst) <= 6);
}

#[test]
fn map_over_an_empty_input_yields_nothing() {
    // E8
    let pool = pool(2);
    let mut it = pool.map(|x: u8| x, Vec::new());
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    assert_eq!(pool.map(|x: u8| x, []).chunksize(4).count(), 0);
}

#[test]
fn map_pulls_at_most_buffersize_items_ahead() {
    // E9: never more than 2 (3 while next() runs) ahead of what was yielded.
    let pool = pool(4);
    let yielded = Arc::new(AtomicUsize::new(0));
    let pulled = Arc::new(AtomicUsize::new(0));
    let most_ahead = Arc::new(AtomicUsize::new(0));
    let (y, p, m) = (yielded.clone(), pulled.clone(), most_ahead.clone());
    // The input is pulled on the consumer's thread, inside next().
    let input = (0..).inspect(move |_| {
        let ahead = p.fetch_add(1, Ordering::SeqCst) + 1 - y.load(Ordering::SeqCst);
        m.fetch_max(ahead, Ordering::SeqCst);
    });
    let mut it = pool.map(|x: usize| x, input).buffersize(2);
    // Lazy: nothing is pulled before the first next().
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
    for i in 0..20 {
        assert_eq!(it.next(), Some(Ok(i)));
        yielded.fetch_add(1, Ordering::SeqCst);
        assert_eq!(pulled.load(Ordering::SeqCst) - (i + 1), 2);
    }
    assert_eq!(most_ahead.load(Ordering::SeqCst), 3);

    let (input, pulled) = counted(0..);
    let never_iterated = pool.map(|x: usize| x, input);
    drop(never_iterated);
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
}

#[test]
fn map_of_workers_plus_one_items_then_shutdown_does_not_deadlock() {
    // E10
    let got = with_timeout(LONG, || {
        let pool = pool(2);
        let mut it = pool.map(
            |x: u64| {
                thread::sleep(Duration::from_millis(5));
                x
            },
            0..3,
        );
        let first = it.next();
        pool.shutdown();
        (first, it.collect::<Vec<_>>())
    });
    assert_eq!(got, (Some(Ok(0)), vec![Ok(1), Ok(2)]));

    // A map first iterated after the shutdown is refused, not stuck.
    let got = with_timeout(LONG, || {
        let pool = pool(2);
        let it = pool.map(|x: u64| x, 0..3);
        pool.shutdown();
        it.collect::<Vec<_>>()
    });
    assert_eq!(got, vec![Err(Error::Shutdown)]);
}

#[test]
fn finished_task_drops_its_closure_and_arguments() {
    // E11: no stale references kept by the pool.
    let pool = pool(2);
    let data = Arc::new(vec![1, 2, 3]);
    let d = Arc::clone(&data);
    assert_eq!(pool.submit(move || d.len()).result_timeout(LONG), Ok(3));
    assert_eq!(Arc::strong_count(&data), 1);

    let args = vec![Arc::clone(&data); 5];
    let lens: Vec<usize> = pool
        .map(|a: Arc<Vec<i32>>| a.len(), args)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(lens, [3; 5]);
    assert_eq!(Arc::strong_count(&data), 1);

    let failing = Arc::clone(&data);
    let mut fut = pool.submit(move || -> usize { panic!("{}", failing.len()) });
    assert!(matches!(
        fut.result_timeout(LONG),
        Err(Error::Panicked { .. })
    ));
    assert_eq!(Arc::strong_count(&data), 1);
}

#[test]
fn zero_workers_chunksize_and_buffersize_are_refused() {
    // E12
    match ThreadPoolExecutor::new(0) {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("max_workers"), "{why}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        ThreadPoolExecutor::builder().max_workers(0).build(),
        Err(Error::InvalidArgument(_))
    ));
    let pool = pool(1);
    for (what, zero_chunk) in [("chunksize", true), ("buffersize", false)] {
        let (input, pulled) = counted(0..10);
        let it = pool.map(|x: usize| x, input);
        let mut it = if zero_chunk {
            it.chunksize(0)
        } else {
            it.buffersize(0)
        };
        match it.next() {
            Some(Err(Error::InvalidArgument(why))) => assert!(why.contains(what), "{why}"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(it.next(), None);
        assert_eq!(pulled.load(Ordering::SeqCst), 0);
    }
}

#[test]
fn map_does_not_keep_yielded_results_alive() {
    // E13
    let pool = pool(2);
    let counter = DropCounter::new();
    let c = counter.clone();
    let mut it = pool.map(move |_: u8| c.token(), [0, 1, 2, 3]);
    for i in 1..=4 {
        let token = it.next().unwrap().unwrap();
        drop(token);
        assert_eq!(counter.dropped(), i);
    }
    assert!(it.next().is_none());
}

#[test]
fn map_keeps_working_after_the_pool_handle_is_dropped() {
    let pool = pool(2);
    let mut it = pool.map(|x: u32| x + 1, 0..10);
    assert_eq!(it.next(), Some(Ok(1)));
    drop(pool);
    let rest = with_timeout(LONG, move || it.collect::<Result<Vec<_>, _>>());
    assert_eq!(rest, Ok((2..11).collect()));
}

// ------------------------------------------------ borrowed input (issue 9) --

#[test]
fn map_input_may_borrow_from_the_caller() {
    // The input iterator is pulled on the iterating thread, so it may
    // borrow; only the items (owned clones here) move into the tasks.
    let (lens, words) = with_timeout(LONG, || {
        let pool = pool(2);
        let words: Vec<String> = ["a", "bb", "ccc"].iter().map(|s| s.to_string()).collect();
        let lens: Vec<usize> = pool
            .map(|w: String| w.len(), words.iter().cloned())
            .chunksize(2)
            .collect::<Result<_, _>>()
            .unwrap();
        (lens, words)
    });
    assert_eq!(lens, [1, 2, 3]);
    assert_eq!(words, ["a", "bb", "ccc"]);
}

#[test]
fn map_task_input_may_borrow_from_the_caller() {
    fn double(x: u64) -> u64 {
        x * 2
    }
    let doubled = with_timeout(LONG, || {
        let pool = pool(2);
        let xs = [1u64, 2, 3];
        let out: Vec<u64> = concurrent_futures::Executor::map_task(
            &pool,
            concurrent_futures::task!(double),
            xs.iter().copied(),
        )
        .collect::<Result<_, _>>()
        .unwrap();
        out
    });
    assert_eq!(doubled, [2, 4, 6]);
}
