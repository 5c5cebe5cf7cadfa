//! The process pool over ssh and srun, beside the local pool: one run on
//! loopback, 2 workers each.
//!
//! ```text
//! eval "$(scripts/test-cluster start)"
//! BENCH_DASK_PYTHON=/path/to/venv/bin/python salloc -n 16 cargo bench --bench cluster
//! ```
//!
//! Rows per launcher: pool start to first result; pipelined round trips
//! (10,000 no-ops submitted, then the results); map of 100,000 no-ops;
//! heavy_compute(1e7) x8 speedup over serial (serial runs taken in turn
//! with the pool's). A launcher whose daemons are not there (no
//! `CF_SSH_CONFIG`, no `SLURM_JOB_ID`) is skipped with a note.
//!
//! Then the figures of one agent per host (issue 14), against the loopback
//! sshds at stock settings (`MaxStartups 10:30:100`, `MaxSessions 10`):
//! workers up on 1 host x 16 and x 64 slots, ssh clients and parent threads
//! on 2 hosts x 32, job steps inside `salloc -n 16`, 640 tasks of 20 ms on
//! 64 slots against the ideal, round trips through one host link, and the
//! bytes shipped on a cold cache; each row's comment says what it measures.
//!
//! Peers: dask.distributed on this machine (`benches/peers/dask_peer.py`)
//! and dask's `SSHCluster` on the same sshd
//! (`benches/peers/dask_ssh_peer.py`, one run per size in
//! `BENCH_DASK_SSH_WORKERS`, default `2,16,64`; it needs dask, distributed
//! and asyncssh), both run by `BENCH_DASK_PYTHON`.
//!
//! `BENCH_REPS` (default 5) sets the repetitions; each row is a median. A
//! short smoke run: `BENCH_REPS=1 BENCH_DASK_SSH_WORKERS=2 ROUND_TRIPS=100
//! PIPELINED=200 MAPPED=1000` (the last three are the dask peer's counts).

use std::hint::black_box;
use std::time::Instant;

use concurrent_futures::launch::{Local, Slurm, Ssh};
use concurrent_futures::{task, Future, ProcessPoolBuilder, ProcessPoolExecutor};

#[path = "cluster/agents.rs"]
mod agents;
#[path = "support/stats.rs"]
mod stats;

use stats::median;

const ROUND_TRIPS: u64 = 10_000;
const MAPPED: u64 = 100_000;
const HEAVY_TASKS: usize = 8;
const HEAVY_N: u64 = 10_000_000;
const WORKERS: usize = 2;

pub(crate) fn noop(x: u64) -> u64 {
    x
}

fn heavy_compute(n: u64) -> u64 {
    (0..n).fold(0u64, |acc, i| acc.wrapping_add(black_box(i * i)))
}

pub(crate) fn reps() -> usize {
    stats::reps(5)
}

/// The launchers to compare, by name; `None` when not available here.
type Make = Box<dyn Fn() -> ProcessPoolBuilder>;

fn launchers() -> Vec<(&'static str, Option<Make>)> {
    fn base() -> ProcessPoolBuilder {
        ProcessPoolExecutor::builder().max_workers(WORKERS)
    }
    let ssh = std::env::var_os("CF_SSH_CONFIG").map(|config| {
        // One launcher for every pool: its host checks are done once.
        let ssh = Ssh::new()
            .ssh_args([std::ffi::OsString::from("-F"), config])
            .host("node1", 1)
            .host("node2", 1);
        Box::new(move || base().launcher(ssh.clone())) as Make
    });
    let slurm = std::env::var_os("SLURM_JOB_ID")
        .map(|_| Box::new(|| base().launcher(Slurm::new())) as Make);
    vec![
        (
            "local",
            Some(Box::new(|| base().launcher(Local::new())) as Make),
        ),
        ("ssh", ssh),
        ("srun", slurm),
    ]
}

pub(crate) fn row(launcher: &str, name: &str, value: String) {
    println!("| {launcher} | {name} | {value} |");
}

fn bench(name: &str, make: impl Fn() -> ProcessPoolBuilder) {
    let reps = reps();
    // Start to first result: a fresh pool each time (the ssh cache is warm
    // after the first).
    let starts: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let pool = make().build().expect("pool");
            pool.submit(task!(noop), 1).result().expect("first");
            let dt = t.elapsed().as_secs_f64();
            pool.shutdown();
            dt
        })
        .collect();
    row(
        name,
        "pool start to first result",
        format!("{:.0} ms", 1e3 * median(starts)),
    );

    let pool = make().build().expect("pool");
    // Warm: every worker started. Launches over ssh and srun run apart
    // from the submits, so the first worker may answer all 64 no-ops
    // before the second is up: wait for it too.
    let warm: Vec<Future<u64>> = (0..64).map(|i| pool.submit(task!(noop), i)).collect();
    for f in warm {
        f.result().expect("warm");
    }
    let until = Instant::now() + std::time::Duration::from_secs(30);
    while pool.worker_pids().len() < WORKERS && Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let rate = agents::pipelined_round_trips(&pool, ROUND_TRIPS, reps);
    row(name, "submit+result noop x10,000", format!("{rate:.0}/s"));

    let rates: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let s: u64 = pool
                .map(task!(noop), 0..MAPPED)
                .map(|r| r.expect("map"))
                .sum();
            black_box(s);
            MAPPED as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    row(
        name,
        "map noop x100,000",
        format!("{:.1}M items/s", median(rates) / 1e6),
    );

    // The serial runs alternate with the pool's: the machine's speed
    // drifts over a run of several minutes, and a serial time taken once at
    // the start misstated rows taken minutes later by a fifth either way.
    let (serials, times): (Vec<f64>, Vec<f64>) = (0..reps)
        .map(|_| {
            let serial = serial_time();
            let t = Instant::now();
            let s: Vec<u64> = pool
                .map(task!(heavy_compute), vec![HEAVY_N; HEAVY_TASKS])
                .collect::<Result<_, _>>()
                .expect("heavy");
            black_box(s);
            (serial, t.elapsed().as_secs_f64())
        })
        .unzip();
    row(
        name,
        "heavy_compute(1e7) x8: speedup vs serial",
        format!("{:.2}x", median(serials) / median(times)),
    );
}

/// heavy_compute(1e7) x8 on this thread, in seconds.
fn serial_time() -> f64 {
    let t = Instant::now();
    for _ in 0..HEAVY_TASKS {
        black_box(heavy_compute(black_box(HEAVY_N)));
    }
    t.elapsed().as_secs_f64()
}

fn dask(ours: Option<(f64, f64)>) {
    let Some(python) = std::env::var_os("BENCH_DASK_PYTHON") else {
        println!("(dask: set BENCH_DASK_PYTHON to a python with dask[distributed] and asyncssh)");
        return;
    };
    let peer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/dask_peer.py");
    let peer = std::env::var_os("BENCH_DASK_PEER").map_or(peer, Into::into);
    match std::process::Command::new(&python).arg(&peer).output() {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                println!("| dask | {line} |");
            }
        }
        Err(e) => println!("(dask: cannot run {}: {e})", peer.display()),
    }
    agents::dask_ssh(&python, std::env::var_os("CF_SSH_CONFIG").as_ref(), ours);
}

fn main() {
    concurrent_futures::init();
    println!("| launcher | row | figure |\n|---|---|---|");
    for (name, builder) in launchers() {
        match builder {
            Some(make) => bench(name, make),
            None => println!("| {name} | skipped: daemons not running (scripts/test-cluster) | |"),
        }
    }
    let ours = agents::rows(std::env::var_os("CF_SSH_CONFIG").as_ref());
    dask(ours);
}
