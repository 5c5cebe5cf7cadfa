//! Soak tests: a million tasks through each pool with resident memory
//! sampled as they go, and thousands of pool create/drop cycles; after
//! each, an exact check that no thread, file descriptor or child process
//! (running or zombie) outlived its pool.
//!
//! The full-size tests are `#[ignore]`d; `scripts/deep-check` runs them with
//! `cargo test --release --test soak -- --ignored --nocapture`. Small
//! versions of the same tests run in every `cargo test` and check the same
//! counts, but not memory (a few thousand tasks say nothing about a leak of
//! a few bytes per task).
//!
//! The counts are of the whole test process, so every test here (the worker
//! entry too) holds [`SERIAL`] for its whole run, and compares against a
//! snapshot taken inside the same test once libtest's own threads have
//! settled. Process workers are this test binary run again as
//! `worker_entry`.

use std::fs;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{task, ProcessPoolExecutor, ThreadPoolExecutor};

/// Held by every test of this file for its whole run.
static SERIAL: Mutex<()> = Mutex::new(());

/// The upper bound for "did not hang" on any one wait.
const LONG: Duration = Duration::from_secs(30);
/// Tasks per batch of `submit`s (each batch is waited for before the next).
const BATCH: usize = 10_000;
/// How much resident memory may grow after the warm-up, in kB.
const RSS_SLACK_KB: u64 = 16 * 1024;
/// The tasks after which memory must be flat.
const WARM_UP: usize = 200_000;
/// Memory is sampled every this many tasks in the full-size tests.
const SAMPLE_EVERY: usize = 100_000;

/// The worker side: `init()` serves tasks when this binary runs as a worker
/// and returns at once in a normal test run.
#[test]
fn worker_entry() {
    let _serial = serial_quick();
    concurrent_futures::init();
}

/// A process pool of `n` workers that are this test binary.
fn process_pool(n: usize) -> ProcessPoolExecutor {
    ProcessPoolExecutor::builder()
        .max_workers(n)
        .worker_args(["worker_entry", "--exact", "--nocapture", "--quiet"])
        .build()
        .expect("build a process pool")
}

/// Task: a value only `n` gives, so a mixed-up result is caught.
fn mix(n: u64) -> u64 {
    (n ^ 0x5DEE_CE66_D1CE_5EED).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

// ---------------------------------------------------------------------------
// Serializing and counting.

fn serial_quick() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes [`SERIAL`], then waits for libtest to settle: the previous test's
/// thread has exited and the next tests' threads are blocked on `SERIAL`.
/// Nothing but this test changes the counts until it returns.
fn serial() -> MutexGuard<'static, ()> {
    let guard = serial_quick();
    let mut last = Resources::now();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        thread::sleep(Duration::from_millis(25));
        let now = Resources::now();
        if now == last || Instant::now() > deadline {
            return guard;
        }
        last = now;
    }
}

/// What a pool could leak, counted for the whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resources {
    /// Entries of `/proc/self/task`.
    threads: usize,
    /// Entries of `/proc/self/fd` (the directory's own descriptor included,
    /// the same in every count).
    fds: usize,
    /// Processes whose parent is this one, zombies included.
    children: usize,
    /// Of those, the ones in state `Z`.
    zombies: usize,
}

impl Resources {
    fn now() -> Self {
        let (children, zombies) = children();
        Resources {
            threads: count_dir("/proc/self/task"),
            fds: count_dir("/proc/self/fd"),
            children,
            zombies,
        }
    }

    /// Asserts that the counts are back to `before`. Descriptors, children
    /// and zombies must be at once (shutdown closes and reaps before it
    /// returns); a joined thread may stay listed for a moment while the
    /// kernel finishes its exit, so threads get up to 2 s.
    #[track_caller]
    fn assert_back_to(before: Resources, what: &str) -> Resources {
        let first = Resources::now();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut now = first;
        while now.threads != before.threads && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
            now = Resources::now();
        }
        println!("{what}: before {before:?}, after shutdown {first:?}, settled {now:?}");
        assert_eq!(first.fds, before.fds, "{what}: file descriptors leaked");
        assert_eq!(
            first.children, before.children,
            "{what}: child processes left"
        );
        assert_eq!(first.zombies, before.zombies, "{what}: zombies left");
        assert_eq!(now, before, "{what}: threads leaked");
        now
    }
}

/// Polls `cond` until it holds; false after `limit`.
fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

fn count_dir(path: &str) -> usize {
    fs::read_dir(path)
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
        .count()
}

/// The processes whose parent is this one, and how many are zombies.
fn children() -> (usize, usize) {
    let me = std::process::id().to_string();
    let (mut all, mut zombies) = (0, 0);
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str() else { continue };
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // Gone between the listing and the read: not ours to count.
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if ppid == me {
            all += 1;
            if state == "Z" {
                zombies += 1;
            }
        }
    }
    (all, zombies)
}

/// Resident memory of process `pid` (`self` for this one), in kB.
fn rss_kb(pid: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Memory samples.

/// Resident memory after so many tasks: this process, and the sum over the
/// process pool's workers.
#[derive(Debug, Default)]
struct Samples {
    rows: Vec<(usize, u64, u64)>,
}

impl Samples {
    fn take(&mut self, tasks: usize, workers: &[u32]) {
        let ours = rss_kb("self");
        let theirs = workers.iter().map(|p| rss_kb(&p.to_string())).sum();
        self.rows.push((tasks, ours, theirs));
    }

    fn print(&self, what: &str, elapsed: Duration) {
        let mb = |kb: u64| kb as f64 / 1024.0;
        println!(
            "{what}: {} tasks in {elapsed:.2?}",
            self.rows.last().map_or(0, |r| r.0)
        );
        for &(tasks, ours, theirs) in &self.rows {
            if theirs > 0 {
                println!(
                    "  {tasks:>9} tasks: RSS {:7.1} MB, workers {:7.1} MB",
                    mb(ours),
                    mb(theirs)
                );
            } else {
                println!("  {tasks:>9} tasks: RSS {:7.1} MB", mb(ours));
            }
        }
    }

    /// The last sample is within [`RSS_SLACK_KB`] of the one taken after
    /// [`WARM_UP`] tasks, for this process and for the workers.
    #[track_caller]
    fn assert_flat(&self, what: &str) {
        let warm = self
            .rows
            .iter()
            .find(|r| r.0 >= WARM_UP)
            .expect("a sample after the warm-up");
        let last = self.rows.last().expect("samples");
        assert!(
            last.1 <= warm.1 + RSS_SLACK_KB,
            "{what}: RSS grew from {} kB after {} tasks to {} kB after {} tasks",
            warm.1,
            warm.0,
            last.1,
            last.0
        );
        assert!(
            last.2 <= warm.2 + RSS_SLACK_KB,
            "{what}: the workers' RSS grew from {} kB after {} tasks to {} kB after {} tasks",
            warm.2,
            warm.0,
            last.2,
            last.0
        );
    }
}

// ---------------------------------------------------------------------------
// Scenarios, each sized by the caller.

/// `total` tasks submitted to a thread pool in batches of [`BATCH`], each
/// batch waited for and checked.
fn thread_pool_submit(total: usize, every: usize) -> Samples {
    let pool = ThreadPoolExecutor::new(4).expect("a thread pool");
    let mut samples = Samples::default();
    samples.take(0, &[]);
    let mut done = 0;
    while done < total {
        let n = BATCH.min(total - done);
        let futures: Vec<_> = (done..done + n)
            .map(|i| pool.submit(move || mix(i as u64)))
            .collect();
        for (i, mut f) in (done..).zip(futures) {
            assert_eq!(f.result_timeout(LONG), Ok(mix(i as u64)), "task {i}");
        }
        done += n;
        if done % every == 0 {
            samples.take(done, &[]);
        }
    }
    pool.shutdown();
    samples
}

/// `total` items through a thread pool's `map`.
fn thread_pool_map(total: usize, every: usize) -> Samples {
    let pool = ThreadPoolExecutor::new(4).expect("a thread pool");
    let mut samples = Samples::default();
    samples.take(0, &[]);
    let results = pool
        .map(|i: u64| mix(i), 0..total as u64)
        .timeout(Duration::from_secs(600));
    for (i, r) in results.enumerate() {
        assert_eq!(r, Ok(mix(i as u64)), "item {i}");
        if (i + 1) % every == 0 {
            samples.take(i + 1, &[]);
        }
    }
    pool.shutdown();
    samples
}

/// `total` tasks submitted to a process pool of 2 workers in batches.
fn process_pool_submit(total: usize, every: usize) -> Samples {
    let pool = process_pool(2);
    let mut samples = Samples::default();
    samples.take(0, &[]);
    let mut done = 0;
    while done < total {
        let n = BATCH.min(total - done);
        let futures: Vec<_> = (done..done + n)
            .map(|i| pool.submit(task!(mix), i as u64))
            .collect();
        for (i, mut f) in (done..).zip(futures) {
            assert_eq!(f.result_timeout(LONG), Ok(mix(i as u64)), "task {i}");
        }
        done += n;
        if done % every == 0 {
            samples.take(done, &pool.worker_pids());
        }
    }
    pool.shutdown();
    samples
}

/// `total` items through a process pool's `map` (automatic chunks).
fn process_pool_map(total: usize, every: usize) -> Samples {
    let pool = process_pool(2);
    let mut samples = Samples::default();
    samples.take(0, &[]);
    let results = pool
        .map(task!(mix), 0..total as u64)
        .timeout(Duration::from_secs(600));
    for (i, r) in results.enumerate() {
        assert_eq!(r, Ok(mix(i as u64)), "item {i}");
        if (i + 1) % every == 0 {
            samples.take(i + 1, &pool.worker_pids());
        }
    }
    pool.shutdown();
    samples
}

/// Runs `scenario` between two resource counts; checks memory if `full`.
fn soak(what: &str, total: usize, full: bool, scenario: fn(usize, usize) -> Samples) {
    let _serial = serial();
    let before = Resources::now();
    let started = Instant::now();
    let every = if full { SAMPLE_EVERY } else { total / 10 };
    let samples = scenario(total, every);
    let elapsed = started.elapsed();
    samples.print(what, elapsed);
    Resources::assert_back_to(before, what);
    if full {
        samples.assert_flat(what);
    }
}

/// `cycles` times: create a pool, run `task_per_cycle` tasks, drop it.
fn cycles(what: &str, cycles: usize, cycle: impl Fn(usize)) {
    let _serial = serial();
    let before = Resources::now();
    let started = Instant::now();
    for i in 0..cycles {
        cycle(i);
    }
    let elapsed = started.elapsed();
    println!(
        "{what}: {cycles} cycles in {elapsed:.2?} ({:.2?} each)",
        elapsed / cycles as u32
    );
    Resources::assert_back_to(before, what);
}

/// A thread pool of 2 with one task; dropped (even cycles) or shut down
/// explicitly and then dropped (odd ones).
fn thread_pool_cycle(i: usize) {
    let pool = ThreadPoolExecutor::new(2).expect("a thread pool");
    let mut f = pool.submit(move || mix(i as u64));
    assert_eq!(f.result_timeout(LONG), Ok(mix(i as u64)));
    if i % 2 == 1 {
        pool.shutdown();
    }
    drop(pool);
}

/// A process pool of 1 with one task; dropped or shut down first.
fn process_pool_cycle(i: usize) {
    let pool = process_pool(1);
    let mut f = pool.submit(task!(mix), i as u64);
    assert_eq!(f.result_timeout(LONG), Ok(mix(i as u64)));
    if i % 2 == 1 {
        pool.shutdown();
    }
    drop(pool);
}

/// Task: ends the worker with exit code 3 for odd `n`, else [`mix`].
fn exit_on_odd(n: u64) -> u64 {
    if n % 2 == 1 {
        std::process::exit(3);
    }
    mix(n)
}

/// How many memory maps this process has: every unjoined thread keeps two
/// (its stack and guard page).
fn maps() -> usize {
    fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

/// One pool that goes through `replacements` worker processes: retired
/// after each task (`max_tasks_per_child(1)`), or, if `crash`, killed by
/// every other task (`exit(3)`) and replaced (`restart_workers`). Samples
/// this process's RSS and memory maps, and checks at every sample that the
/// gone workers were reaped (at most the one live worker is a child, none
/// a zombie).
fn worker_churn(what: &str, replacements: usize, full: bool, crash: bool) {
    let _serial = serial();
    let before = Resources::now();
    let started = Instant::now();
    let builder = ProcessPoolExecutor::builder().max_workers(1).worker_args([
        "worker_entry",
        "--exact",
        "--nocapture",
        "--quiet",
    ]);
    let pool = if crash {
        builder.restart_workers(true)
    } else {
        builder.max_tasks_per_child(1)
    }
    .build()
    .expect("build a process pool");
    // Crashing every other task takes two tasks per replacement.
    let tasks = if crash {
        2 * replacements
    } else {
        replacements
    };
    let every = tasks / 10;
    let mut rows = Vec::new();
    for i in 0..tasks as u64 {
        let r = if crash {
            pool.submit(task!(exit_on_odd), i).result_timeout(LONG)
        } else {
            pool.submit(task!(mix), i).result_timeout(LONG)
        };
        if crash && i % 2 == 1 {
            match r {
                // Under restart_workers the pool goes on: its worker died.
                Err(concurrent_futures::Error::WorkerDied(why)) => {
                    assert!(why.contains("exited with code 3"), "task {i}: {why}")
                }
                other => panic!("task {i}: expected WorkerDied, got {other:?}"),
            }
        } else {
            assert_eq!(r, Ok(mix(i)), "task {i}");
        }
        if (i as usize + 1) % every == 0 {
            // A worker that just exited is reaped within milliseconds (the
            // reader polls `try_wait`): a zombie may be seen, not kept.
            let reaped = within(Duration::from_secs(2), || {
                let now = Resources::now();
                now.children <= 1 && now.zombies == 0
            });
            let now = Resources::now();
            assert!(reaped, "{what}: {now:?} after {} tasks", i + 1);
            rows.push((i as usize + 1, rss_kb("self"), maps()));
        }
    }
    drop(pool);
    let elapsed = started.elapsed();
    println!("{what}: {replacements} worker replacements in {elapsed:.2?}");
    for &(tasks, rss, maps) in &rows {
        println!(
            "  {tasks:>6} tasks: RSS {:6.1} MB, {maps} memory maps",
            rss as f64 / 1024.0
        );
    }
    Resources::assert_back_to(before, what);
    // After the first tenth the maps must stay put; with each gone worker's
    // threads left unjoined they grew by 6 per replacement.
    let (warm, last) = (rows[0], rows[rows.len() - 1]);
    assert!(
        last.2 <= warm.2 + 64,
        "{what}: memory maps grew from {} to {}: threads of gone workers not joined",
        warm.2,
        last.2
    );
    if full {
        assert!(
            last.1 <= warm.1 + RSS_SLACK_KB,
            "{what}: RSS grew from {} kB to {} kB",
            warm.1,
            last.1
        );
    }
}

// ---------------------------------------------------------------------------
// Small versions: every `cargo test`.

#[test]
fn thread_pool_submit_20k_leaves_nothing_behind() {
    soak("thread pool submit", 20_000, false, thread_pool_submit);
}

#[test]
fn thread_pool_map_20k_leaves_nothing_behind() {
    soak("thread pool map", 20_000, false, thread_pool_map);
}

#[test]
fn process_pool_submit_20k_leaves_nothing_behind() {
    soak("process pool submit", 20_000, false, process_pool_submit);
}

#[test]
fn process_pool_map_20k_leaves_nothing_behind() {
    soak("process pool map", 20_000, false, process_pool_map);
}

#[test]
fn thread_pool_50_cycles_leave_nothing_behind() {
    cycles("thread pool cycles", 50, thread_pool_cycle);
}

#[test]
fn process_pool_50_cycles_leave_nothing_behind() {
    cycles("process pool cycles", 50, process_pool_cycle);
}

#[test]
fn process_pool_50_retired_workers_leave_nothing_behind() {
    worker_churn("retired workers", 50, false, false);
}

#[test]
fn process_pool_50_crashed_workers_leave_nothing_behind() {
    worker_churn("crashed workers", 50, false, true);
}

// ---------------------------------------------------------------------------
// Full size: `cargo test --release --test soak -- --ignored`.

#[test]
#[ignore = "soak: 1,000,000 tasks; run by scripts/deep-check"]
fn thread_pool_submit_1m_memory_flat() {
    soak("thread pool submit", 1_000_000, true, thread_pool_submit);
}

#[test]
#[ignore = "soak: 1,000,000 tasks; run by scripts/deep-check"]
fn thread_pool_map_1m_memory_flat() {
    soak("thread pool map", 1_000_000, true, thread_pool_map);
}

#[test]
#[ignore = "soak: 1,000,000 tasks; run by scripts/deep-check"]
fn process_pool_submit_1m_memory_flat() {
    soak("process pool submit", 1_000_000, true, process_pool_submit);
}

#[test]
#[ignore = "soak: 1,000,000 tasks; run by scripts/deep-check"]
fn process_pool_map_1m_memory_flat() {
    soak("process pool map", 1_000_000, true, process_pool_map);
}

#[test]
#[ignore = "soak: 2,000 pools; run by scripts/deep-check"]
fn thread_pool_2000_cycles_leave_nothing_behind() {
    cycles("thread pool cycles", 2_000, thread_pool_cycle);
}

#[test]
#[ignore = "soak: 2,000 process pools; run by scripts/deep-check"]
fn process_pool_2000_cycles_leave_nothing_behind() {
    cycles("process pool cycles", 2_000, process_pool_cycle);
}

#[test]
#[ignore = "soak: 2,000 worker processes in one pool; run by scripts/deep-check"]
fn process_pool_2000_retired_workers_memory_flat() {
    worker_churn("retired workers", 2_000, true, false);
}

#[test]
#[ignore = "soak: 2,000 worker processes in one pool; run by scripts/deep-check"]
fn process_pool_2000_crashed_workers_memory_flat() {
    worker_churn("crashed workers", 2_000, true, true);
}
