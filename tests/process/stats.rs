//! `stats()` on both pools: the counts are exact once the futures are done
//! (successes, panics, a crash under `restart_workers`, a time limit,
//! cancellations), and `running`/`queued` follow the futures' own state.

use crate::common;
use std::time::Duration;

use crate::process_common::*;
use concurrent_futures::{task, Error, HostStats, PoolStats, Shutdown, ThreadPoolExecutor};

fn tasks(s: &PoolStats) -> (u64, u64, u64, usize, usize) {
    (s.completed, s.failed, s.cancelled, s.queued, s.running)
}

#[test]
fn thread_pool_counts_successes_panics_and_cancellations_exactly() {
    common::arm_watchdog();
    let pool = ThreadPoolExecutor::new(2).expect("pool");
    assert_eq!(tasks(&pool.stats()), (0, 0, 0, 0, 0));
    for i in 0..10u64 {
        assert_eq!(pool.submit(move || i).result(), Ok(i));
    }
    let oops = pool.submit(|| -> u8 { panic!("boom") });
    assert!(matches!(oops.result(), Err(Error::Panicked { .. })));
    let s = pool.stats();
    assert_eq!(tasks(&s), (10, 1, 0, 0, 0));
    assert!(s.hosts.is_empty());
    assert_eq!((s.restarts, s.time_limit_kills, s.retries), (0, 0, 0));

    // Two blocked tasks on two threads, three queued behind them.
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let (started_tx, started) = crossbeam_channel::unbounded::<()>();
    let blocked: Vec<_> = (0..2)
        .map(|_| {
            let (rx, started_tx) = (rx.clone(), started_tx.clone());
            pool.submit(move || {
                started_tx.send(()).expect("started");
                rx.recv_timeout(LONG).is_ok()
            })
        })
        .collect();
    common::recv(&started);
    common::recv(&started);
    let queued: Vec<_> = (0..3u64).map(|i| pool.submit(move || i)).collect();
    let s = pool.stats();
    assert_eq!((s.queued, s.running, s.workers, s.idle), (3, 2, 2, 0));
    assert!(queued[0].cancel());
    pool.shutdown_with(Shutdown {
        wait: false,
        cancel_futures: true,
    });
    drop(tx);
    for mut f in blocked {
        assert_eq!(f.result_timeout(LONG), Ok(false));
    }
    pool.shutdown();
    let s = pool.stats();
    // Eleven finished before; the two blocked ones; the three queued were
    // cancelled (one by its holder, two by the shutdown).
    assert_eq!(tasks(&s), (12, 1, 3, 0, 0));
    // A submit refused after shutdown is a future that ended in an `Err`.
    assert_eq!(pool.submit(|| 0).result(), Err(Error::Shutdown));
    assert_eq!(pool.stats().failed, 2);
}

#[test]
fn process_pool_counts_successes_a_crash_and_a_time_limit_exactly() {
    common::arm_watchdog();
    let pool = restarting_pool(2);
    for x in 0..6u64 {
        assert_eq!(
            pool.submit(task!(square), x).result_timeout(LONG),
            Ok(x * x)
        );
    }
    let s = pool.stats();
    assert_eq!(tasks(&s), (6, 0, 0, 0, 0));
    assert_eq!((s.restarts, s.time_limit_kills), (0, 0));

    let mut crash = pool.submit(task!(abort_now), ());
    assert!(matches!(
        crash.result_timeout(LONG),
        Err(Error::WorkerDied(_))
    ));
    let limited = task!(stuck).time_limit(Duration::from_millis(200));
    let mut late = pool.submit(limited, ());
    assert_eq!(
        late.result_timeout(LONG),
        Err(Error::TimeLimit(Duration::from_millis(200)))
    );
    // The pool goes on.
    let map: Vec<u64> = pool
        .map(task!(square), 0..4)
        .chunksize(1)
        .collect::<Result<_, _>>()
        .expect("map");
    assert_eq!(map, [0, 1, 4, 9]);
    let s = pool.stats();
    assert_eq!(tasks(&s), (10, 2, 0, 0, 0));
    // Both workers that died were replaced; one was killed at its limit.
    assert_eq!((s.restarts, s.time_limit_kills, s.retries), (2, 1, 0));
    assert_eq!(s.hosts.len(), 1);
    let h: &HostStats = &s.hosts[0];
    assert_eq!(h.name, "localhost");
    assert!(h.up);
    assert_eq!(h.workers, s.workers);
    let last = h.last_error.as_deref().expect("the last death is kept");
    assert!(last.contains("time limit"), "{last}");
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn process_pool_running_and_queued_follow_the_futures() {
    common::arm_watchdog();
    let s = Scratch::new("stats-run");
    let pool = pool(2);
    let blocked: Vec<_> = (0..2).map(|_| pool.submit(task!(gate), s.dir())).collect();
    s.wait_started(2);
    let queued: Vec<_> = (0..3u64).map(|x| pool.submit(task!(square), x)).collect();
    let running = blocked.iter().filter(|f| f.running()).count();
    assert_eq!(running, 2);
    let st = pool.stats();
    assert_eq!((st.queued, st.running), (3, 2));
    assert_eq!((st.workers, st.idle, st.starting), (2, 0, 0));
    assert!(queued[2].cancel());
    s.open();
    for mut f in blocked {
        assert!(f.result_timeout(LONG).is_ok());
    }
    let mut queued = queued;
    let cancelled = queued.pop().expect("three");
    for (x, mut f) in (0..2u64).zip(queued) {
        assert_eq!(f.result_timeout(LONG), Ok(x * x));
    }
    assert_eq!(cancelled.result(), Err(Error::Cancelled));
    common::eventually("the cancelled task is dropped by the pool", || {
        pool.stats().cancelled == 1
    });
    assert_eq!(tasks(&pool.stats()), (4, 0, 1, 0, 0));
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_retry_is_counted_and_so_is_the_replaced_worker() {
    common::arm_watchdog();
    let s = Scratch::new("stats-retry");
    let pool = pool(1);
    let mut fut = pool.submit(task!(abort_first).retries(1), s.dir());
    assert_eq!(fut.result_timeout(LONG), Ok(2));
    let st = pool.stats();
    assert_eq!(tasks(&st), (1, 0, 0, 0, 0));
    assert_eq!((st.retries, st.restarts, st.time_limit_kills), (1, 1, 0));
    common::with_timeout(LONG, move || drop(pool));
}

#[test]
fn a_codec_error_at_submit_counts_as_failed() {
    common::arm_watchdog();
    let pool = pool(1);
    let bad = pool.submit(
        task!(picky_value),
        Picky {
            fail: true,
            value: 1,
        },
    );
    assert!(matches!(bad.result(), Err(Error::Codec(_))));
    assert_eq!(tasks(&pool.stats()), (0, 1, 0, 0, 0));
    // Nothing was launched for it.
    assert_eq!(pool.stats().workers, 0);
}
