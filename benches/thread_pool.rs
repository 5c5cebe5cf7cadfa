//! Side-by-side benchmark of `ThreadPoolExecutor` against its peers.
//!
//! One run prints one table: the crate's thread pool, rayon, the `threadpool`
//! crate, `futures`' `ThreadPool`, a `std::thread::spawn` per task, and
//! CPython's `concurrent.futures` (run as a subprocess from
//! `benches/peers/python_peer.py`), all on the same scenarios and worker
//! counts. Each Rust scenario is repeated and the median is printed; the
//! implementations take turns inside each repetition so that a noisy machine
//! hurts them alike.
//!
//! Beside each rate it prints the context switches per task: the switches
//! of every thread of the bench process (summed over `/proc/self/task`, the
//! counters `perf stat -e context-switches` reads) during that peer's runs
//! of the scenario, divided by the tasks run.
//!
//! Run: `cargo bench --bench thread_pool`. Environment: `BENCH_REPS` (default
//! 7), `BENCH_PY_RUNS` (default 3, 0 skips CPython), `PYTHON` (default
//! `python3`), `PYTHON_PEER` (path of `python_peer.py`), `BENCH_PEERS`
//! (comma-separated peer names to run, default all; `ours` is always run).

#[path = "thread_pool/parts.rs"]
mod parts;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{as_completed, Future, ThreadPoolExecutor};
use futures::executor::block_on;
use futures::stream::FuturesUnordered;
use futures::task::SpawnExt;
use parts::{counting, fmt_rate, fmt_ratio, median_f64, run_python, Cell};

/// Tasks per throughput scenario (the same `N` is passed to CPython).
const N: u64 = 100_000;
/// `std::thread::spawn` per task is slow: it runs fewer tasks (rates are
/// still comparable) and leaves fewer unjoined threads around at once.
const N_SPAWN: u64 = 10_000;
/// Workers of the throughput scenarios.
const WORKERS: usize = 2;
/// The I/O scenario: this many tasks, each sleeping `IO_SLEEP`, on
/// `IO_WORKERS` workers.
const IO_TASKS: u64 = 32;
const IO_WORKERS: usize = 8;
const IO_SLEEP: Duration = Duration::from_millis(200);
/// The I/O scenario takes ~0.8 s a run, so it is repeated less.
const IO_REPS: usize = 3;

/// The rows of the table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// Submit N no-op tasks, then take each result in submission order.
    SubmitResult,
    /// `map` of a no-op over N items, results in input order.
    Map,
    /// Submit N tasks and iterate them in completion order (what CPython's
    /// row times).
    AsCompleted,
    /// Only the completion-order iteration, starting right after the N
    /// tasks were submitted.
    AsCompletedSubmitted,
    /// Only the completion-order iteration, over N tasks that all finished.
    AsCompletedFinished,
    /// 32 tasks sleeping 200 ms on 8 workers.
    Io,
}

const SCENARIOS: [Scenario; 6] = [
    Scenario::SubmitResult,
    Scenario::Map,
    Scenario::AsCompleted,
    Scenario::AsCompletedSubmitted,
    Scenario::AsCompletedFinished,
    Scenario::Io,
];

impl Scenario {
    fn label(self) -> &'static str {
        match self {
            Scenario::SubmitResult => "submit+result noop",
            Scenario::Map => "map noop",
            Scenario::AsCompleted => "as_completed noop (submit+iterate)",
            Scenario::AsCompletedSubmitted => "as_completed iterate, just submitted",
            Scenario::AsCompletedFinished => "as_completed iterate, all finished",
            Scenario::Io => "io sleep(0.2) x32, 8 workers",
        }
    }

    /// The row of `python_peer.py` measuring the same thing.
    fn python_row(self) -> Option<&'static str> {
        match self {
            Scenario::SubmitResult => Some("thread submit+result noop"),
            Scenario::Map => Some("thread map noop"),
            Scenario::AsCompleted => Some("thread as_completed noop"),
            Scenario::Io => Some("thread io sleep(0.2) x32, 8 workers"),
            _ => None,
        }
    }
}

/// Timings of one `as_completed` run: from before the submits, and from
/// after them.
struct AsCompletedTimes {
    total: Duration,
    iterate: Duration,
}

/// One implementation under test.
trait Peer {
    fn name(&self) -> &'static str;
    /// How many tasks its throughput scenarios run.
    fn n(&self) -> u64 {
        N
    }
    fn submit_result(&self, n: u64) -> Duration;
    fn map(&self, n: u64) -> Duration;
    fn as_completed(&self, n: u64) -> AsCompletedTimes;
    fn as_completed_finished(&self, n: u64) -> Duration;
    fn io(&self) -> Duration;
}

/// Checks the sum of `0..n` so the work cannot be skipped or go wrong.
fn check(sum: u64, n: u64) {
    assert_eq!(black_box(sum), n * (n - 1) / 2, "wrong results");
}

fn sleep_task(i: u64) -> u64 {
    thread::sleep(IO_SLEEP);
    i
}

fn check_io(sum: u64) {
    check(sum, IO_TASKS);
}

// ---------------------------------------------------------------- ours

struct Ours {
    pool: ThreadPoolExecutor,
    io: ThreadPoolExecutor,
}

impl Ours {
    fn new() -> Self {
        let pool = ThreadPoolExecutor::new(WORKERS).expect("pool");
        let io = ThreadPoolExecutor::new(IO_WORKERS).expect("pool");
        // Warm up: start the threads, like CPython's `map` over 1000 items.
        let _ = pool.map(|x: u64| x, 0..1000).count();
        Ours { pool, io }
    }

    fn submit_all(&self, n: u64) -> Vec<Future<u64>> {
        (0..n).map(|i| self.pool.submit(move || i)).collect()
    }
}

impl Peer for Ours {
    fn name(&self) -> &'static str {
        "ours"
    }

    fn submit_result(&self, n: u64) -> Duration {
        let t = Instant::now();
        let futures = self.submit_all(n);
        let sum: u64 = futures.into_iter().map(|f| f.result().unwrap()).sum();
        let dt = t.elapsed();
        check(sum, n);
        dt
    }

    fn map(&self, n: u64) -> Duration {
        let t = Instant::now();
        let sum: u64 = self.pool.map(|x: u64| x, 0..n).map(Result::unwrap).sum();
        let dt = t.elapsed();
        check(sum, n);
        dt
    }

    fn as_completed(&self, n: u64) -> AsCompletedTimes {
        let t = Instant::now();
        let futures = self.submit_all(n);
        let t1 = Instant::now();
        let sum: u64 = as_completed(futures).map(|f| f.result().unwrap()).sum();
        let (total, iterate) = (t.elapsed(), t1.elapsed());
        check(sum, n);
        AsCompletedTimes { total, iterate }
    }

    fn as_completed_finished(&self, n: u64) -> Duration {
        let futures = self.submit_all(n);
        futures.iter().for_each(Future::wait);
        let t = Instant::now();
        let sum: u64 = as_completed(futures).map(|f| f.result().unwrap()).sum();
        let dt = t.elapsed();
        check(sum, n);
        dt
    }

    fn io(&self) -> Duration {
        let t = Instant::now();
        let sum: u64 = self
            .io
            .map(sleep_task, 0..IO_TASKS)
            .map(Result::unwrap)
            .sum();
        let dt = t.elapsed();
        check_io(sum);
        dt
    }
}

// ---------------------------------------------------------------- rayon

/// rayon: `ThreadPool::spawn` plus a one-shot channel per task; the
/// completion-order scenarios share one channel.
struct Rayon {
    pool: rayon::ThreadPool,
    io: rayon::ThreadPool,
}

impl Rayon {
    fn new() -> Self {
        let build = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .expect("rayon pool")
        };
        Rayon {
            pool: build(WORKERS),
            io: build(IO_WORKERS),
        }
    }
}

/// Spawns one task per item with its own one-shot channel; sums the results
/// in input order.
fn oneshot_each(n: u64, spawn: impl Fn(Box<dyn FnOnce() + Send>)) -> u64 {
    let receivers: Vec<_> = (0..n)
        .map(|i| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            spawn(Box::new(move || {
                let _ = tx.send(i);
            }));
            rx
        })
        .collect();
    receivers.into_iter().map(|rx| rx.recv().unwrap()).sum()
}

/// Spawns one task per item, all sending to one channel; returns the
/// receiver.
fn shared_channel(
    n: u64,
    f: fn(u64) -> u64,
    spawn: impl Fn(Box<dyn FnOnce() + Send>),
) -> crossbeam_channel::Receiver<u64> {
    let (tx, rx) = crossbeam_channel::unbounded();
    for i in 0..n {
        let tx = tx.clone();
        spawn(Box::new(move || {
            let _ = tx.send(f(i));
        }));
    }
    rx
}

fn identity(i: u64) -> u64 {
    i
}

/// Waits until `n` results sit in the channel, without taking them.
fn wait_filled(rx: &crossbeam_channel::Receiver<u64>, n: u64) {
    while (rx.len() as u64) < n {
        thread::sleep(Duration::from_micros(200));
    }
}

/// The closure-based peers (rayon, threadpool, std::thread) differ only in
/// how they spawn; `Spawner` names that, and the scenarios are shared.
trait Spawner {
    fn spawn(&self, job: Box<dyn FnOnce() + Send>);
    fn spawn_io(&self, job: Box<dyn FnOnce() + Send>);
    /// Called once a scenario's tasks have all sent their result.
    fn settle(&self) {}
}

fn spawner_submit_result(s: &impl Spawner, n: u64) -> Duration {
    let t = Instant::now();
    let sum = oneshot_each(n, |job| s.spawn(job));
    let dt = t.elapsed();
    s.settle();
    check(sum, n);
    dt
}

fn spawner_as_completed(s: &impl Spawner, n: u64) -> AsCompletedTimes {
    let t = Instant::now();
    let rx = shared_channel(n, identity, |job| s.spawn(job));
    let t1 = Instant::now();
    let sum: u64 = rx.iter().take(n as usize).sum();
    let (total, iterate) = (t.elapsed(), t1.elapsed());
    s.settle();
    check(sum, n);
    AsCompletedTimes { total, iterate }
}

fn spawner_as_completed_finished(s: &impl Spawner, n: u64) -> Duration {
    let rx = shared_channel(n, identity, |job| s.spawn(job));
    wait_filled(&rx, n);
    let t = Instant::now();
    let sum: u64 = rx.iter().take(n as usize).sum();
    let dt = t.elapsed();
    s.settle();
    check(sum, n);
    dt
}

fn spawner_io(s: &impl Spawner) -> Duration {
    let t = Instant::now();
    let receivers: Vec<_> = (0..IO_TASKS)
        .map(|i| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            s.spawn_io(Box::new(move || {
                let _ = tx.send(sleep_task(i));
            }));
            rx
        })
        .collect();
    let sum: u64 = receivers.into_iter().map(|rx| rx.recv().unwrap()).sum();
    let dt = t.elapsed();
    s.settle();
    check_io(sum);
    dt
}

impl Spawner for Rayon {
    fn spawn(&self, job: Box<dyn FnOnce() + Send>) {
        self.pool.spawn(job);
    }
    fn spawn_io(&self, job: Box<dyn FnOnce() + Send>) {
        self.io.spawn(job);
    }
}

/// Implements `Peer` for a `Spawner`: `map` is per-item spawn with a
/// one-shot channel read in input order, like submit+result.
macro_rules! spawner_peer {
    ($ty:ty, $name:expr, $n:expr) => {
        impl Peer for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn n(&self) -> u64 {
                $n
            }
            fn submit_result(&self, n: u64) -> Duration {
                spawner_submit_result(self, n)
            }
            fn map(&self, n: u64) -> Duration {
                spawner_submit_result(self, n)
            }
            fn as_completed(&self, n: u64) -> AsCompletedTimes {
                spawner_as_completed(self, n)
            }
            fn as_completed_finished(&self, n: u64) -> Duration {
                spawner_as_completed_finished(self, n)
            }
            fn io(&self) -> Duration {
                spawner_io(self)
            }
        }
    };
}

spawner_peer!(Rayon, "rayon", N);

// ---------------------------------------------------------------- threadpool

/// The `threadpool` crate: `execute` plus a channel.
struct Tp {
    pool: threadpool::ThreadPool,
    io: threadpool::ThreadPool,
}

impl Tp {
    fn new() -> Self {
        Tp {
            pool: threadpool::ThreadPool::new(WORKERS),
            io: threadpool::ThreadPool::new(IO_WORKERS),
        }
    }
}

impl Spawner for Tp {
    fn spawn(&self, job: Box<dyn FnOnce() + Send>) {
        self.pool.execute(job);
    }
    fn spawn_io(&self, job: Box<dyn FnOnce() + Send>) {
        self.io.execute(job);
    }
}

spawner_peer!(Tp, "threadpool", N);

// ---------------------------------------------------------------- std::thread

/// `std::thread::spawn` per task; handles are joined after each scenario.
#[derive(Default)]
struct StdThread {
    handles: parking_lot::Mutex<Vec<thread::JoinHandle<()>>>,
}

impl Spawner for StdThread {
    fn spawn(&self, job: Box<dyn FnOnce() + Send>) {
        self.handles.lock().push(thread::spawn(job));
    }
    fn spawn_io(&self, job: Box<dyn FnOnce() + Send>) {
        self.spawn(job);
    }
    fn settle(&self) {
        for h in std::mem::take(&mut *self.handles.lock()) {
            h.join().unwrap();
        }
    }
}

spawner_peer!(StdThread, "std::thread", N_SPAWN);

// ---------------------------------------------------------------- futures

/// `futures::executor::ThreadPool` with `spawn_with_handle`, `block_on`
/// per handle; completion order through `FuturesUnordered`.
struct FuturesPool {
    pool: futures::executor::ThreadPool,
    io: futures::executor::ThreadPool,
}

impl FuturesPool {
    fn new() -> Self {
        let build = |n| {
            futures::executor::ThreadPool::builder()
                .pool_size(n)
                .create()
                .expect("futures pool")
        };
        FuturesPool {
            pool: build(WORKERS),
            io: build(IO_WORKERS),
        }
    }

    fn spawn_all(
        &self,
        n: u64,
        done: Option<&Arc<AtomicUsize>>,
    ) -> Vec<impl std::future::Future<Output = u64>> {
        (0..n)
            .map(|i| {
                let done = done.cloned();
                self.pool
                    .spawn_with_handle(async move {
                        if let Some(d) = done {
                            d.fetch_add(1, Ordering::Release);
                        }
                        i
                    })
                    .expect("spawn")
            })
            .collect()
    }
}

impl Peer for FuturesPool {
    fn name(&self) -> &'static str {
        "futures"
    }

    fn submit_result(&self, n: u64) -> Duration {
        let t = Instant::now();
        let handles = self.spawn_all(n, None);
        let sum: u64 = handles.into_iter().map(block_on).sum();
        let dt = t.elapsed();
        check(sum, n);
        dt
    }

    fn map(&self, n: u64) -> Duration {
        self.submit_result(n)
    }

    fn as_completed(&self, n: u64) -> AsCompletedTimes {
        let t = Instant::now();
        let handles = self.spawn_all(n, None);
        let t1 = Instant::now();
        let unordered: FuturesUnordered<_> = handles.into_iter().collect();
        let sum: u64 = block_on(futures::StreamExt::fold(unordered, 0, |a, x| async move {
            a + x
        }));
        let (total, iterate) = (t.elapsed(), t1.elapsed());
        check(sum, n);
        AsCompletedTimes { total, iterate }
    }

    fn as_completed_finished(&self, n: u64) -> Duration {
        let done = Arc::new(AtomicUsize::new(0));
        let handles = self.spawn_all(n, Some(&done));
        while (done.load(Ordering::Acquire) as u64) < n {
            thread::sleep(Duration::from_micros(200));
        }
        let t = Instant::now();
        let unordered: FuturesUnordered<_> = handles.into_iter().collect();
        let sum: u64 = block_on(futures::StreamExt::fold(unordered, 0, |a, x| async move {
            a + x
        }));
        let dt = t.elapsed();
        check(sum, n);
        dt
    }

    fn io(&self) -> Duration {
        let t = Instant::now();
        let handles: Vec<_> = (0..IO_TASKS)
            .map(|i| {
                self.io
                    .spawn_with_handle(async move { sleep_task(i) })
                    .expect("spawn")
            })
            .collect();
        let sum: u64 = handles.into_iter().map(block_on).sum();
        let dt = t.elapsed();
        check_io(sum);
        dt
    }
}

// ---------------------------------------------------------------- table

fn fmt_cell(s: Scenario, c: Option<Cell>) -> String {
    match c {
        None => "-".into(),
        Some(c) if s == Scenario::Io => format!("{:.0} ms", c.secs * 1e3),
        Some(c) => fmt_rate(c.rate()),
    }
}

fn main() {
    let reps: usize = std::env::var("BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7)
        .max(1);
    let py_runs: usize = std::env::var("BENCH_PY_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    println!(
        "thread_pool bench: {cpus} cpus, {WORKERS} workers, N={N} (std::thread: {N_SPAWN}), \
         {reps} reps (io: {}), CPython runs: {py_runs}",
        IO_REPS.min(reps)
    );

    // CPython first, alone, so that it does not compete with the Rust runs.
    let python = run_python(py_runs);

    let wanted = std::env::var("BENCH_PEERS").ok();
    let wanted = |name: &str| match wanted.as_deref() {
        None => true,
        Some(w) => name == "ours" || w.split(',').any(|x| x.trim() == name),
    };
    let all: Vec<Box<dyn Peer>> = vec![
        Box::new(Ours::new()),
        Box::new(Rayon::new()),
        Box::new(Tp::new()),
        Box::new(FuturesPool::new()),
        Box::<StdThread>::default(),
    ];
    let peers: Vec<Box<dyn Peer>> = all.into_iter().filter(|p| wanted(p.name())).collect();
    // samples[peer][scenario] = seconds of each repetition.
    let mut samples = vec![vec![Vec::new(); SCENARIOS.len()]; peers.len()];
    // switches[peer][scenario] = context switches over all repetitions.
    let mut switches = vec![vec![Some(0u64); SCENARIOS.len()]; peers.len()];
    let index = |s: Scenario| SCENARIOS.iter().position(|&x| x == s).unwrap();
    for rep in 0..reps {
        for (p, peer) in peers.iter().enumerate() {
            let n = peer.n();
            let row = &mut samples[p];
            let cs = &mut switches[p];
            let i = index(Scenario::SubmitResult);
            row[i].push(counting(&mut cs[i], || peer.submit_result(n)).as_secs_f64());
            let i = index(Scenario::Map);
            row[i].push(counting(&mut cs[i], || peer.map(n)).as_secs_f64());
            let i = index(Scenario::AsCompleted);
            let ac = counting(&mut cs[i], || peer.as_completed(n));
            row[i].push(ac.total.as_secs_f64());
            row[index(Scenario::AsCompletedSubmitted)].push(ac.iterate.as_secs_f64());
            row[index(Scenario::AsCompletedFinished)]
                .push(peer.as_completed_finished(n).as_secs_f64());
            if rep < IO_REPS {
                let i = index(Scenario::Io);
                row[i].push(counting(&mut cs[i], || peer.io()).as_secs_f64());
            }
        }
    }
    // Per task; not for the iterate-only rows (their switches happen in
    // the untimed submits), nor for std::thread (its threads are gone).
    let per_task = |p: usize, s: Scenario| -> String {
        let runs = samples[p][index(s)].len() as u64;
        let tasks = runs
            * if s == Scenario::Io {
                IO_TASKS
            } else {
                peers[p].n()
            };
        let timed_only = matches!(
            s,
            Scenario::AsCompletedSubmitted | Scenario::AsCompletedFinished
        );
        match switches[p][index(s)] {
            Some(c) if tasks > 0 && !timed_only && peers[p].name() != "std::thread" => {
                format!("{:.3}", c as f64 / tasks as f64)
            }
            _ => "-".into(),
        }
    };

    let cell = |p: usize, s: Scenario| -> Option<Cell> {
        let mut v = samples[p][index(s)].clone();
        if v.is_empty() {
            return None;
        }
        let n = if s == Scenario::Io {
            IO_TASKS
        } else {
            peers[p].n()
        };
        Some(Cell {
            n,
            secs: median_f64(&mut v),
        })
    };
    let py_cell = |s: Scenario| -> Option<Cell> {
        let rows = python.as_ref().ok()?;
        let name = s.python_row()?;
        let (_, n, secs) = rows.iter().find(|(m, _, _)| m == name)?;
        Some(Cell { n: *n, secs: *secs })
    };
    let rayon = peers.iter().position(|p| p.name() == "rayon");
    let rayon_cell = |s: Scenario| rayon.and_then(|r| cell(r, s));

    println!();
    print!("{:<38}", "scenario (median; io: ms, else tasks/s)");
    for p in &peers {
        print!(" {:>11}", p.name());
    }
    println!(" {:>11} {:>11} {:>11}", "CPython", "ours/rayon", "ours/CPy");
    for &s in &SCENARIOS {
        print!("{:<38}", s.label());
        for p in 0..peers.len() {
            print!(" {:>11}", fmt_cell(s, cell(p, s)));
        }
        println!(
            " {:>11} {:>11} {:>11}",
            fmt_cell(s, py_cell(s)),
            fmt_ratio(cell(0, s), rayon_cell(s)),
            fmt_ratio(cell(0, s), py_cell(s))
        );
    }
    println!();
    println!(
        "peers: rayon = ThreadPool::spawn + one-shot channel per task; threadpool = execute +"
    );
    println!("  channel; futures = ThreadPool::spawn_with_handle + block_on per handle");
    println!("  (FuturesUnordered for as_completed); std::thread = spawn + join per task.");
    println!("  Without a map or as_completed of their own, peers do map as per-task spawn with");
    println!("  results read in input order, and as_completed as one shared channel.");
    if let Err(why) = &python {
        println!("CPython: {why}");
    }

    println!();
    print!("{:<38}", "context switches per task");
    for p in &peers {
        print!(" {:>11}", p.name());
    }
    println!();
    for &s in &SCENARIOS {
        print!("{:<38}", s.label());
        for p in 0..peers.len() {
            print!(" {:>11}", per_task(p, s));
        }
        println!();
    }

    // Spread of our own runs, to judge the noise.
    println!();
    println!("ours, per scenario: median / min / max seconds over the repetitions");
    for &s in &SCENARIOS {
        let mut v = samples[0][index(s)].clone();
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        println!(
            "  {:<38} {:.4} / {:.4} / {:.4}",
            s.label(),
            median_f64(&mut v),
            lo,
            hi
        );
    }

    println!();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let sr = Scenario::SubmitResult;
    if let (Some(o), Some(r)) = (cell(0, sr), rayon_cell(sr)) {
        let x = o.rate() / r.rate();
        println!(
            "target submit+result >= 3x rayon:       {x:.1}x  {}",
            verdict(x >= 3.0)
        );
    }
    if let (Some(o), Some(r)) = (cell(0, Scenario::Map), rayon_cell(Scenario::Map)) {
        let x = o.rate() / r.rate();
        println!(
            "target map >= 4x rayon:                 {x:.1}x  {}",
            verdict(x >= 4.0)
        );
    }
    match (cell(0, sr), py_cell(sr)) {
        (Some(o), Some(p)) => {
            let x = o.rate() / p.rate();
            println!(
                "target submit+result >= 40x CPython:    {x:.1}x  {}",
                verdict(x >= 40.0)
            );
        }
        _ => println!("target submit+result >= 40x CPython:    not measured (no CPython)"),
    }
    if let Some(o) = cell(0, Scenario::AsCompletedFinished) {
        let r = o.rate();
        println!(
            "target as_completed (finished) >= 30M/s: {}  {}",
            fmt_rate(r),
            verdict(r >= 30e6)
        );
    }
}
