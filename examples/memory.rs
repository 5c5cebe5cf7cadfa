//! Measures the memory the thread pool needs, from `/proc/self/status`.
//!
//! 1. Peak RSS (`VmHWM`) of `pool.map(f, 0..)` over an endless input,
//!    consumed for 5,000,000 items: `map` is lazy and keeps only a small
//!    window of tasks in flight, so the peak stays flat however long it runs.
//!    (Python's `Executor.map` submits the whole input first, and an endless
//!    input never returns.)
//! 2. RSS of 1,000,000 pending `Future<u64>`s: a 1-worker pool is blocked on
//!    a channel, then 1M `move || i` tasks are queued behind it. Each costs
//!    one allocation (its future's state, holding the closure: 56 bytes, a
//!    64-byte heap chunk), a 16-byte slot in the pool's queue and the
//!    16-byte `Future` in the caller's `Vec`: about 96 bytes.
//!
//! Run: `cargo run --release --example memory` (Linux: it reads `/proc`);
//! `-- N` consumes N items in the `map` phase instead of 5,000,000.

use std::time::Instant;

use concurrent_futures::{Error, Future, ThreadPoolExecutor};

const MAP_ITEMS: usize = 5_000_000;
const PENDING: u64 = 1_000_000;

/// A field of `/proc/self/status` in KiB, such as `VmRSS` or `VmHWM`.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Megabytes (10^6 bytes), the unit of the pending-futures target.
fn mb(kib: u64) -> f64 {
    (kib * 1024) as f64 / 1e6
}

fn rss() -> u64 {
    status_kib("VmRSS").expect("VmRSS in /proc/self/status (Linux only)")
}

fn main() -> Result<(), Error> {
    let start_rss = rss();
    println!("start: VmRSS {:.1} MiB", mib(start_rss));

    // 1. An endless input through `map`. This runs first, so the process's
    //    high-water mark (VmHWM) is the peak of this phase.
    {
        let pool = ThreadPoolExecutor::new(2)?;
        let t = Instant::now();
        let items = std::env::args()
            .nth(1)
            .map_or(MAP_ITEMS, |s| s.parse().expect("N: a number of items"));
        let mut seen = 0usize;
        for r in pool.map(|x: u64| x.wrapping_mul(3), 0..).take(items) {
            r?;
            seen += 1;
        }
        let dt = t.elapsed().as_secs_f64();
        let peak = status_kib("VmHWM").expect("VmHWM");
        println!(
            "map over 0.. (endless), {seen} items consumed in {dt:.2} s: \
             peak RSS (VmHWM) {:.1} MiB (target < 32 MiB: {})",
            mib(peak),
            if mib(peak) < 32.0 { "met" } else { "MISSED" }
        );
    }

    // 2. One million pending futures.
    let pool = ThreadPoolExecutor::new(1)?;
    let (release, blocked) = crossbeam_channel::bounded::<()>(0);
    let blocker = pool.submit(move || blocked.recv().is_ok());
    while !blocker.running() {
        std::thread::yield_now();
    }
    let baseline = rss();
    let t = Instant::now();
    let futures: Vec<Future<u64>> = (0..PENDING).map(|i| pool.submit(move || i)).collect();
    let dt = t.elapsed().as_secs_f64();
    let loaded = rss();
    assert!(futures.iter().all(|f| !f.done()), "the worker is blocked");
    let delta = loaded.saturating_sub(baseline);
    println!(
        "{PENDING} pending Future<u64> (submitted in {dt:.2} s): VmRSS {:.1} MiB, \
         {:.1} MiB ({:.1} MB) above the {:.1} MiB baseline = {:.0} bytes per future \
         (target <= 100 MB: {})",
        mib(loaded),
        mib(delta),
        mb(delta),
        mib(baseline),
        (delta * 1024) as f64 / PENDING as f64,
        if mb(delta) <= 100.0 { "met" } else { "MISSED" }
    );

    // Let them run and check every result.
    release.send(()).expect("the blocker waits");
    assert_eq!(blocker.result(), Ok(true));
    let t = Instant::now();
    let sum: u64 = futures.into_iter().map(|f| f.result().unwrap()).sum();
    assert_eq!(sum, PENDING * (PENDING - 1) / 2);
    println!(
        "drained in {:.2} s; VmRSS now {:.1} MiB, process peak (VmHWM) {:.1} MiB",
        t.elapsed().as_secs_f64(),
        mib(rss()),
        mib(status_kib("VmHWM").expect("VmHWM"))
    );
    Ok(())
}
