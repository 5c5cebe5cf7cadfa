//! The executor lines docs/conformance.md asks of both pools (E1-E13), run
//! against the process pool: submit, map and its options, cancellation of
//! what has not started, and what the pool keeps alive. Shutdown and the
//! initializer are in `shutdown.rs`.
//!
//! Workers are this test binary run again as `worker_entry` (see
//! `process_common`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::with_timeout;
use crate::process_common::*;
use concurrent_futures::{task, Error, Executor, ProcessPoolExecutor};

// --- Tasks of this file ---------------------------------------------------

fn answer() -> u32 {
    42
}

fn greet(name: String) -> String {
    format!("hello, {name}")
}

/// `a / b`: panics on a zero divisor.
fn divide(a: u64, b: u64) -> u64 {
    a / b
}

/// `x * x` after a few milliseconds that depend on `x`, so that tasks
/// finish out of order.
fn slow_square(x: u64) -> u64 {
    thread::sleep(Duration::from_millis((7 - x % 7) * 2));
    x * x
}

/// Item 2 panics; the others mark `{dir}/ran-{id}` and take `ms`.
fn mark_unless_2(dir: String, id: u32, ms: u64) -> u32 {
    assert!(id != 2, "item 2 fails");
    mark(dir, id, ms)
}

/// Item 1 waits at the gate in `dir`; the others mark `{dir}/ran-{id}`.
fn gate_at_1(dir: String, id: u32) -> u32 {
    if id == 1 {
        gate(dir)
    } else {
        mark(dir, id, 0)
    }
}

// --- E1-E13 ---------------------------------------------------------------

// E1
#[test]
fn submit_result_returns_the_functions_value() {
    let pool = pool(2);
    assert_eq!(
        pool.submit(task!(pow), (2, 10)).result_timeout(LONG),
        Ok(1024)
    );
    assert_eq!(pool.submit(task!(answer), ()).result_timeout(LONG), Ok(42));
    assert_eq!(
        pool.submit(task!(greet), "processes".to_string())
            .result_timeout(LONG),
        Ok("hello, processes".to_string())
    );
    // Through the trait both pools implement.
    assert_eq!(
        pool.submit_task(task!(square), 9).result_timeout(LONG),
        Ok(81)
    );
}

// E2
#[test]
fn map_equals_a_sequential_map_in_input_order() {
    let pool = pool(2);
    let input: Vec<(u64, u32)> = (0..10).map(|i| (i, i as u32)).collect();
    let expected: Vec<u64> = input.iter().map(|&(a, b)| pow(a, b)).collect();
    let plain: Vec<u64> = pool
        .map(task!(pow), input.clone())
        .timeout(LONG)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(plain, expected);
    let chunked: Vec<u64> = pool
        .map(task!(pow), input)
        .chunksize(3)
        .timeout(LONG)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(chunked, expected);
    // Out-of-order completions, and the automatic chunk size.
    let squares: Vec<u64> = pool
        .map(task!(slow_square), 0..30u64)
        .timeout(LONG)
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(squares, (0..30u64).map(|x| x * x).collect::<Vec<_>>());
}

// E3
#[test]
fn map_yields_a_failure_at_its_position_then_ends_and_cancels_the_rest() {
    let pool = pool(1);
    let mut it = pool
        .map(task!(divide), [(1, 2), (4, 2), (1, 0), (9, 3)])
        .chunksize(1)
        .timeout(LONG);
    assert_eq!(it.next(), Some(Ok(0)));
    assert_eq!(it.next(), Some(Ok(2)));
    assert!(
        matches!(it.next(), Some(Err(Error::Panicked { message, .. })) if message.contains("divide by zero"))
    );
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);

    // The items after the failure that had not started never run. Slow
    // items on an idle worker keep the pipeline short: at most two are
    // sent ahead (tasks sent to a worker can no longer be cancelled).
    let pool = self::pool(1);
    let scratch = Scratch::new("e3");
    let dir = scratch.dir();
    let mut it = pool
        .map(
            task!(mark_unless_2),
            (0..20).map(move |id| (dir.clone(), id, 30)),
        )
        .chunksize(1)
        .buffersize(20)
        .timeout(LONG);
    assert_eq!(it.next(), Some(Ok(0)));
    assert_eq!(it.next(), Some(Ok(1)));
    assert!(matches!(it.next(), Some(Err(Error::Panicked { .. }))));
    assert_eq!(it.next(), None);
    with_timeout(LONG, move || pool.shutdown());
    let ran: Vec<u32> = (3..20).filter(|&id| scratch.ran(id)).collect();
    assert!(ran.len() <= 3, "items after the failure ran: {ran:?}");
}

// E4
#[test]
fn map_timeout_gives_timeout_on_the_slow_item_then_stays_finished() {
    let pool = pool(1);
    // Started first, so the deadline does not cover the start-up.
    pool.submit(task!(pid), ()).result_timeout(LONG).unwrap();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let mut it = pool
        .map(task!(sleep_ms), [0, 0, 3_000])
        .chunksize(1)
        .timeout(timeout);
    assert!(matches!(it.next(), Some(Ok(_))));
    assert!(matches!(it.next(), Some(Ok(_))));
    match it.next() {
        Some(Err(e)) => assert!(e.is_timeout(), "{e:?}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let waited = started.elapsed();
    assert!(waited >= timeout, "gave up early: {waited:?}");
    assert!(
        waited < Duration::from_secs(3),
        "waited for the task: {waited:?}"
    );
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    // Do not wait for the 3 s task.
    pool.kill_workers();
}

// E5
#[test]
fn dropping_a_map_cancels_the_tasks_not_started() {
    let pool = pool(1);
    let scratch = Scratch::new("e5");
    let dir = scratch.dir();
    let mut it = pool
        .map(task!(gate_at_1), (0..12).map(move |id| (dir.clone(), id)))
        .chunksize(1)
        .buffersize(12)
        .timeout(LONG);
    assert_eq!(it.next(), Some(Ok(0)));
    scratch.wait_started(1); // item 1 runs, the rest are queued
    drop(it);
    scratch.open();
    with_timeout(LONG, move || pool.shutdown());
    let ran: Vec<u32> = (2..12).filter(|&id| scratch.ran(id)).collect();
    // At most the item pipelined behind the running one (or two).
    assert!(ran.len() <= 2, "cancelled items ran: {ran:?}");
}

// E6
#[test]
fn buffersize_1_2_n_and_2n_give_ordered_results() {
    let pool = pool(2);
    let n = 14;
    let expected: Vec<u64> = (0..n).map(|x| x * x).collect();
    for buffersize in [1, 2, n as usize, 2 * n as usize] {
        for chunksize in [1, 3] {
            let got: Vec<u64> = pool
                .map(task!(slow_square), 0..n)
                .buffersize(buffersize)
                .chunksize(chunksize)
                .timeout(LONG)
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                got, expected,
                "buffersize {buffersize}, chunksize {chunksize}"
            );
        }
    }
}

// E7
#[test]
fn map_over_an_endless_input_yields_the_first_items() {
    let pool = pool(2);
    for chunksize in [None, Some(1)] {
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pulled);
        let input = (0u64..).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let mut it = pool.map(task!(|x: u64| x), input).buffersize(2);
        if let Some(c) = chunksize {
            it = it.chunksize(c);
        }
        let first: Vec<u64> =
            with_timeout(LONG, move || it.take(3).collect::<Result<_, _>>().unwrap());
        assert_eq!(first, [0, 1, 2]);
        // Bounded: three chunks at most (of 1 item, or of the automatic size).
        let pulled = pulled.load(Ordering::SeqCst);
        let bound = match chunksize {
            Some(c) => 3 + 2 * c,
            None => 3 * 4096,
        };
        assert!(
            pulled <= bound,
            "pulled {pulled} items (chunksize {chunksize:?})"
        );
    }
}

// E8
#[test]
fn map_over_an_empty_input_yields_nothing() {
    let pool = pool(2);
    let mut it = pool.map(task!(square), Vec::<u64>::new()).timeout(LONG);
    assert_eq!(it.next(), None);
    assert_eq!(it.next(), None);
    assert!(pool.worker_pids().is_empty(), "nothing should have started");
}

// E9
#[test]
fn map_with_buffersize_2_pulls_at_most_2_items_ahead() {
    let pool = pool(2);
    // An input without a size hint (one item per task), and a sized one
    // with chunksize 1: on the process pool, buffersize counts tasks.
    for sized in [false, true] {
        let pulled = Arc::new(AtomicUsize::new(0));
        let yielded = Arc::new(AtomicUsize::new(0));
        let worst = Arc::new(AtomicUsize::new(0));
        let (p, y, w) = (
            Arc::clone(&pulled),
            Arc::clone(&yielded),
            Arc::clone(&worst),
        );
        let count = move |x: u64| {
            let n = p.fetch_add(1, Ordering::SeqCst) + 1;
            w.fetch_max(n - y.load(Ordering::SeqCst), Ordering::SeqCst);
            x
        };
        let it = if sized {
            pool.map(task!(square), (0..20u64).map(count)).chunksize(1)
        } else {
            let mut next = 0u64;
            let input = std::iter::from_fn(move || {
                (next < 20).then(|| {
                    next += 1;
                    count(next - 1)
                })
            });
            pool.map(task!(square), input)
        };
        let it = it.buffersize(2).timeout(LONG);
        thread::sleep(Duration::from_millis(20));
        assert_eq!(pulled.load(Ordering::SeqCst), 0, "pulled before iterating");
        for (x, r) in (0..20u64).zip(it) {
            assert_eq!(r, Ok(x * x));
            let y = yielded.fetch_add(1, Ordering::SeqCst) + 1;
            let ahead = pulled.load(Ordering::SeqCst) - y;
            assert!(ahead <= 2, "{ahead} items pulled ahead (sized: {sized})");
        }
        let worst = worst.load(Ordering::SeqCst);
        assert!(worst <= 3, "{worst} items pulled ahead during next()");
    }
    // A map never iterated pulls (and runs) nothing.
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let it = pool.map(
        task!(square),
        (0..5u64).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    );
    drop(it);
    assert_eq!(pulled.load(Ordering::SeqCst), 0);
}

// E10
#[test]
fn map_of_workers_plus_1_items_then_immediate_shutdown_does_not_deadlock() {
    let workers = 2;
    let pool = pool(workers);
    let (first, rest) = with_timeout(LONG, move || {
        let mut it = pool.map(task!(sleep_ms), vec![20; workers + 1]);
        let first = it.next();
        pool.shutdown();
        (first, it.collect::<Vec<_>>())
    });
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    assert_eq!(rest.len(), workers);
    assert!(rest.iter().all(Result::is_ok), "{rest:?}");
    // Shut down before the map starts: it fails at once.
    let pool = self::pool(workers);
    let it = pool.map(task!(sleep_ms), vec![20; workers + 1]);
    pool.shutdown();
    let got: Vec<_> = with_timeout(LONG, move || it.collect());
    assert_eq!(got, [Err(Error::Shutdown)]);
}

// E11
#[test]
fn finished_tasks_arguments_and_results_are_not_kept() {
    let pool = pool(1);
    let key = fresh_key();
    let mut fut = pool.submit(task!(hold), Tracked::new(key));
    assert_eq!(live(key), 0, "the argument is dropped here once sent");
    assert_eq!(fut.result_timeout(LONG), Ok(1));
    assert_eq!(
        pool.submit(task!(live), key).result_timeout(LONG),
        Ok(0),
        "the worker dropped its copy after the job"
    );
    // A result is held by its future only: dropping the future unread
    // frees it.
    let key = fresh_key();
    let fut = pool.submit(task!(make_tracked), key);
    assert!(fut.wait_timeout(LONG));
    assert_eq!(live(key), 1);
    drop(fut);
    eventually("the unread result is freed", || live(key) == 0);
    // And a result taken out lives only in the caller's hands.
    let key = fresh_key();
    let value = pool
        .submit(task!(make_tracked), key)
        .result_timeout(LONG)
        .unwrap();
    drop(value);
    eventually("the taken result is freed", || live(key) == 0);
}

// E12
#[test]
fn zero_workers_chunksize_0_and_buffersize_0_are_refused() {
    assert!(matches!(
        ProcessPoolExecutor::new(0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        builder().max_workers(0).build(),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        builder().max_tasks_per_child(0).build(),
        Err(Error::InvalidArgument(_))
    ));
    let pool = pool(1);
    let mut it = pool.map(task!(square), 0..3u64).chunksize(0);
    assert!(matches!(it.next(), Some(Err(Error::InvalidArgument(_)))));
    assert_eq!(it.next(), None);
    let mut it = pool.map(task!(square), 0..3u64).buffersize(0);
    assert!(matches!(it.next(), Some(Err(Error::InvalidArgument(_)))));
    assert_eq!(it.next(), None);
    assert!(pool.worker_pids().is_empty(), "nothing should have started");
}

// E13
#[test]
fn map_iterator_does_not_keep_yielded_results_alive() {
    let pool = pool(2);
    let base = fresh_key();
    for chunksize in [1, 4] {
        let mut it = pool
            .map(task!(make_tracked), base..base + 12)
            .chunksize(chunksize)
            .timeout(LONG);
        for key in base..base + 12 {
            let value = it.next().unwrap().unwrap();
            assert_eq!(value.key, key);
            drop(value);
            assert_eq!(
                live(key),
                0,
                "the iterator kept item {key} (chunksize {chunksize})"
            );
        }
        assert!(it.next().is_none());
    }
}

// --- Issue 9: the pool chosen at run time ----------------------------------

/// The same code on both pools through `AnyExecutor`, picked by a value
/// known only at run time.
#[test]
fn any_executor_runs_the_same_tasks_on_threads_and_processes() {
    use concurrent_futures::{AnyExecutor, ThreadPoolExecutor};
    fn run(pool: &AnyExecutor) -> (u32, Vec<u64>) {
        let one = pool.submit_task(task!(answer), ()).result_timeout(LONG);
        let squares = pool
            .map_task(task!(slow_square), 0..5u64)
            .timeout(LONG)
            .collect::<Result<Vec<u64>, Error>>();
        (one.unwrap(), squares.unwrap())
    }
    for use_processes in [false, true] {
        let pool: AnyExecutor = if use_processes {
            pool(2).into()
        } else {
            ThreadPoolExecutor::new(3).unwrap().into()
        };
        assert_eq!(pool.max_workers(), if use_processes { 2 } else { 3 });
        assert!(matches!(
            (&pool, use_processes),
            (AnyExecutor::Processes(_), true) | (AnyExecutor::Threads(_), false)
        ));
        assert_eq!(run(&pool), (42, vec![0, 1, 4, 9, 16]));
        with_timeout(LONG, move || {
            pool.shutdown();
            assert_eq!(
                pool.submit_task(task!(answer), ()).result(),
                Err(Error::Shutdown)
            );
        });
    }
}
