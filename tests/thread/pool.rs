//! `ThreadPoolExecutor`: submit, its threads and initializers
//! (docs/conformance.md E1, T1-T7 and I1-I2 on the thread pool).

use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use crate::common::{blocked_tasks, pool, recv, with_timeout, DropCounter, Gate, Ran, LONG};
use concurrent_futures::{task, wait, Error, Executor, ReturnWhen, ThreadPoolExecutor};
use crossbeam_channel::unbounded;

thread_local! {
    /// Set by the initializer of `initializer_runs_in_every_worker_before_any_task`.
    static INITIALIZED: Cell<bool> = const { Cell::new(false) };
}

// ---------------------------------------------------------------- submit --

#[test]
fn submit_result_returns_the_functions_value() {
    // E1
    let pool = pool(2);
    let words = ["a".to_string(), "bc".to_string()];
    assert_eq!(
        pool.submit(move || words.concat()).result_timeout(LONG),
        Ok("abc".into())
    );
    assert_eq!(pool.submit(|| 6 * 7).result_timeout(LONG), Ok(42));
    assert_eq!(pool.submit(|| ()).result_timeout(LONG), Ok(()));
}

#[test]
fn submit_task_and_map_task_run_through_the_executor_trait() {
    // E1, E2 through `impl Executor`.
    fn square(x: u64) -> u64 {
        x * x
    }
    fn run(pool: &impl Executor) -> (Result<u64, Error>, Vec<u64>) {
        let one = pool.submit_task(task!(square), 7).result_timeout(LONG);
        let many = pool
            .map_task(task!(square), 0..5)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        (one, many)
    }
    let pool = pool(2);
    assert_eq!(run(&pool), (Ok(49), vec![0, 1, 4, 9, 16]));
    assert_eq!(Executor::max_workers(&pool), 2);
    Executor::shutdown(&pool);
    assert_eq!(
        pool.submit_task(task!(square), 1).result_timeout(LONG),
        Err(Error::Shutdown)
    );
}

// --------------------------------------------------------------- threads --

#[test]
fn map_dropped_without_iterating_runs_nothing() {
    // T1
    let pool = pool(2);
    let ran = Ran::default();
    let r = ran.clone();
    drop(pool.map(move |x: usize| r.push(x), 0..10));
    pool.shutdown();
    assert_eq!(ran.get(), []);
    assert_eq!(pool.num_threads(), 0);
}

#[test]
fn map_iterated_to_the_end_before_shutdown_ran_every_task() {
    // T1
    let pool = pool(3);
    let ran = Ran::default();
    let r = ran.clone();
    let n = pool.map(move |x: usize| r.push(x), 0..30).count();
    pool.shutdown();
    assert_eq!(n, 30);
    let mut ran = ran.get();
    ran.sort_unstable();
    assert_eq!(ran, (0..30).collect::<Vec<_>>());
}

#[test]
fn default_workers_is_min_32_and_cpus_plus_4() {
    // T2
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let expected = (cpus + 4).min(32);
    assert_eq!(ThreadPoolExecutor::default().max_workers(), expected);
    assert_eq!(
        ThreadPoolExecutor::builder().build().unwrap().max_workers(),
        expected
    );
}

#[test]
fn sixty_blocking_tasks_on_four_workers_start_exactly_four_threads() {
    // T3
    let pool = pool(4);
    let mut gate = Gate::new();
    let (futures, started) = blocked_tasks(&pool, &gate, 60);
    let mut first: Vec<usize> = (0..4).map(|_| recv(&started)).collect();
    first.sort_unstable();
    assert_eq!(first, [0, 1, 2, 3]);
    assert_eq!(pool.num_threads(), 4);
    gate.open();
    let (done, not_done) = wait(&futures, Some(LONG), ReturnWhen::AllCompleted);
    assert_eq!((done.len(), not_done.len()), (60, 0));
    assert_eq!(pool.num_threads(), 4);
}

#[test]
fn sequential_submits_reuse_one_thread() {
    // T4
    let pool = pool(8);
    assert_eq!(pool.num_threads(), 0);
    for i in 0..3 {
        assert_eq!(pool.submit(move || i * 2).result_timeout(LONG), Ok(i * 2));
    }
    assert_eq!(pool.num_threads(), 1);
}

#[test]
fn done_callback_waiting_for_a_task_it_submits_gets_a_thread() {
    // A worker running done-callbacks is not idle: a task submitted from a
    // callback starts a spare thread rather than queue behind the callback.
    let pool = Arc::new(pool(2));
    let first = pool.submit(|| 1);
    assert_eq!(first.exception_timeout(LONG), Ok(None));
    let gate = Gate::new();
    let waiter = gate.waiter();
    let fut = pool.submit(move || assert!(waiter.wait()));
    let (tx, rx) = unbounded();
    let p = Arc::clone(&pool);
    fut.add_done_callback(move |_| {
        let mut follow_up = p.submit(|| 2);
        tx.send(follow_up.result_timeout(LONG)).unwrap();
    });
    drop(gate);
    assert_eq!(recv(&rx), Ok(2));
    assert_eq!(pool.num_threads(), 2);
}

#[test]
fn thread_names_are_the_prefix_and_a_number() {
    // T5
    let pool = ThreadPoolExecutor::builder()
        .max_workers(3)
        .thread_name_prefix("worker")
        .build()
        .unwrap();
    let mut gate = Gate::new();
    let (tx, names) = unbounded();
    let futures: Vec<_> = (0..3)
        .map(|_| {
            let tx = tx.clone();
            let waiter = gate.waiter();
            pool.submit(move || {
                tx.send(thread::current().name().map(String::from)).unwrap();
                // Hold the thread so that each task gets its own.
                assert!(waiter.wait());
            })
        })
        .collect();
    let got: BTreeSet<_> = (0..3).map(|_| recv(&names).unwrap()).collect();
    assert_eq!(
        got,
        BTreeSet::from(["worker_0".to_string(), "worker_1".into(), "worker_2".into()])
    );
    gate.open();
    for f in futures {
        assert!(f.wait_timeout(LONG));
    }

    let default_named = pool_name(&ThreadPoolExecutor::new(1).unwrap());
    assert!(
        default_named.starts_with("ThreadPoolExecutor-") && default_named.ends_with("_0"),
        "{default_named}"
    );
}

fn pool_name(pool: &ThreadPoolExecutor) -> String {
    pool.submit(|| thread::current().name().unwrap().to_string())
        .result_timeout(LONG)
        .unwrap()
}

#[test]
fn saturated_pool_map_with_zero_timeout_times_out_and_starts_nothing() {
    // T6
    let pool = pool(1);
    let mut gate = Gate::new();
    let (blocker, started) = blocked_tasks(&pool, &gate, 1);
    recv(&started);
    let ran = Ran::default();
    let r = ran.clone();
    let mut it = pool
        .map(move |x: usize| r.push(x), [1, 2])
        .timeout(Duration::ZERO);
    assert_eq!(it.next(), Some(Err(Error::timeout())));
    assert_eq!(it.next(), None);
    gate.open();
    pool.shutdown();
    assert_eq!(ran.get(), []);
    assert!(blocker
        .into_iter()
        .all(|mut f| f.result_timeout(LONG) == Ok(0)));
}

#[test]
fn task_panic_becomes_panicked_and_the_pool_keeps_working() {
    // T7
    let pool = pool(1);
    let at = format!("{}:{}:", file!(), line!() + 1);
    let mut fut = pool.submit(|| -> u8 { panic!("boom {}", 7) });
    match fut.result_timeout(LONG) {
        Err(Error::Panicked {
            message, location, ..
        }) => {
            assert_eq!(message, "boom 7");
            let location = location.expect("a location");
            assert!(location.starts_with(&at), "{location} vs {at}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut odd = pool.submit(|| -> u8 { std::panic::panic_any(42_u32) });
    match odd.result_timeout(LONG) {
        Err(Error::Panicked { message, .. }) => {
            assert_eq!(message, "panic with a non-string payload")
        }
        other => panic!("unexpected {other:?}"),
    }
    // The same single worker survived and runs the next task.
    assert_eq!(pool.submit(|| 5).result_timeout(LONG), Ok(5));
    assert_eq!(pool.num_threads(), 1);
    let err = pool
        .submit(|| -> u8 { panic!("shown") })
        .result_timeout(LONG)
        .unwrap_err();
    assert!(err
        .to_string()
        .starts_with("task panicked at tests/thread/pool.rs:"));
    assert!(err.to_string().ends_with(": shown"));
}

// ----------------------------------------------------------- initializer --

#[test]
fn initializer_runs_in_every_worker_before_any_task() {
    // I1
    let runs = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&runs);
    let pool = ThreadPoolExecutor::builder()
        .max_workers(3)
        .initializer(move || {
            INITIALIZED.with(|i| i.set(true));
            r.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let mut gate = Gate::new();
    let (tx, seen) = unbounded();
    let blocked: Vec<_> = (0..3)
        .map(|_| {
            let tx = tx.clone();
            let waiter = gate.waiter();
            pool.submit(move || {
                tx.send(INITIALIZED.with(Cell::get)).unwrap();
                assert!(waiter.wait());
            })
        })
        .collect();
    for _ in 0..3 {
        assert!(recv(&seen));
    }
    gate.open();
    let later: Vec<bool> = pool
        .map(|_: u8| INITIALIZED.with(Cell::get), [0; 20])
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(later.iter().all(|&b| b));
    assert!(blocked
        .into_iter()
        .all(|mut f| f.result_timeout(LONG) == Ok(())));
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(pool.num_threads(), 3);
}

#[test]
fn failing_initializer_breaks_the_pool() {
    // I2: pending and later futures fail naming the initializer; nothing
    // hangs and every closure is dropped.
    let mut init_gate = Gate::new();
    let waiter = init_gate.waiter();
    let pool = ThreadPoolExecutor::builder()
        .max_workers(1)
        .initializer(move || {
            assert!(waiter.wait());
            Err::<(), _>("no config")
        })
        .build()
        .unwrap();
    let counter = DropCounter::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let submit = |pool: &ThreadPoolExecutor| {
        let token = counter.token();
        let ran = Arc::clone(&ran);
        pool.submit(move || {
            drop(token);
            ran.fetch_add(1, Ordering::SeqCst);
        })
    };
    // Pending while the initializer runs.
    let mut pending: Vec<_> = (0..5).map(|_| submit(&pool)).collect();
    init_gate.open();
    for f in &mut pending {
        match f.result_timeout(LONG) {
            Err(Error::BrokenPool(why)) => {
                assert!(
                    why.contains("initializer") && why.contains("no config"),
                    "{why}"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let later = submit(&pool);
    assert!(later.done());
    assert!(matches!(later.result(), Err(Error::BrokenPool(_))));
    let pool = with_timeout(LONG, move || {
        pool.shutdown();
        pool
    });
    assert_eq!(pool.num_threads(), 0);
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(counter.dropped(), 6);
    // Broken wins over shut down, as in Python.
    let mapped: Vec<_> = pool.map(|x: u8| x, [1]).collect();
    assert!(matches!(mapped[..], [Err(Error::BrokenPool(_))]));
}

#[test]
fn panicking_initializer_breaks_the_pool() {
    // I2
    let pool = ThreadPoolExecutor::builder()
        .max_workers(2)
        .initializer(|| -> Result<(), String> { panic!("init boom") })
        .build()
        .unwrap();
    let mut fut = pool.submit(|| 1);
    match fut.result_timeout(LONG) {
        Err(Error::BrokenPool(why)) => {
            assert!(
                why.contains("initializer") && why.contains("init boom"),
                "{why}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    // Later submits fail at once, and map yields the error.
    let later = pool.submit(|| 2);
    assert!(later.done());
    assert!(matches!(later.result(), Err(Error::BrokenPool(_))));
    let mut it = pool.map(|x: u8| x, [1, 2]);
    assert!(matches!(it.next(), Some(Err(Error::BrokenPool(_)))));
    assert_eq!(it.next(), None);
    drop(it);
    with_timeout(LONG, move || drop(pool));
}

#[test]
fn pool_dropped_by_its_own_task_does_not_deadlock() {
    let pool = Arc::new(pool(2));
    let (tx, rx) = unbounded();
    let p = Arc::clone(&pool);
    let inner = pool.submit(move || {
        let _ = tx.send(());
        // The last handle goes away on this worker thread.
        drop(p);
        7
    });
    drop(pool);
    recv(&rx);
    let mut inner = inner;
    assert_eq!(inner.result_timeout(LONG), Ok(7));
}

/// While a worker runs a done-callback it must not count as idle: a task
/// submitted meanwhile (here by a caller woken by the same result) gets a
/// thread of its own, so a callback that waits for it does not deadlock.
/// Before the fix the second task was stuck behind the callback in most
/// runs.
#[test]
fn a_callback_waiting_for_a_new_task_does_not_block_it() {
    // The pools are dropped (joined) inside: a hang there fails the test.
    with_timeout(6 * LONG, callback_waiting_for_a_new_task);
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
