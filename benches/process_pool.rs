//! Side-by-side benchmark of `ProcessPoolExecutor` against its peers.
//!
//! One run prints one table: this crate's process pool, procspawn's `Pool`
//! (fed in windows of 256, since it opens channels per task) and CPython's
//! `ProcessPoolExecutor` (`benches/peers/python_peer.py process`, plus an
//! inline script for the 100 MB row), with 2 workers each. Rust rows are
//! medians of `BENCH_REPS` runs (default 7).
//!
//! A second table compares scheduling on uneven work (`support/sched.rs`:
//! mixed sleeps, short tasks behind a long one, fresh pools, and a burst of
//! no-ops followed by one long and four shorter tasks; the worst and the
//! median of 3 rounds, 5 for fresh pools) with CPython, loky and
//! dask.distributed (`benches/peers/sched_peer.py`,
//! run by `SCHED_PYTHON`, default `PYTHON`: a virtualenv with loky and
//! dask installed).
//!
//! Run: `cargo bench --bench process_pool`. `BENCH_PY=0` skips the Python
//! peers, `PYTHON` names the interpreter, `PYTHON_PEER` the peer script;
//! `BENCH_ONLY=sched` or `BENCH_ONLY=throughput` runs one table.

use std::hint::black_box;
use std::process::Command;
use std::time::Instant;

use concurrent_futures::{task, Future, ProcessPoolExecutor, Task};
use serde_bytes::ByteBuf;

#[path = "support/sched.rs"]
mod sched;
#[path = "support/stats.rs"]
mod stats;

use stats::median;

const WORKERS: usize = 2;
const ROUND_TRIPS: u64 = 10_000;
const MAPPED: u64 = 100_000;
const HEAVY_TASKS: usize = 8;
const BIG: usize = 100 * 1024 * 1024;
const PROCSPAWN_WINDOW: usize = 256;

fn noop(x: u64) -> u64 {
    x
}

/// The same work as CPython's `heavy_compute`, wrapping instead of growing.
/// Never inlined: the serial baseline and the workers run the same machine
/// code (an inlined copy in the baseline loop sped up or slowed down with
/// unrelated changes to the binary, and the ratio with it).
#[inline(never)]
fn heavy_compute(n: u64) -> u64 {
    (0..n).fold(0u64, |acc, i| acc.wrapping_add(black_box(i * i)))
}

fn echo(bytes: ByteBuf) -> ByteBuf {
    bytes
}

fn echo_vec(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

fn byte_len(bytes: ByteBuf) -> usize {
    bytes.len()
}

fn reps() -> usize {
    stats::reps(7)
}

/// Runs `f` `reps` times and returns the median of the seconds it reports.
fn measure(reps: usize, mut f: impl FnMut() -> f64) -> f64 {
    median((0..reps).map(|_| f()).collect())
}

fn pool() -> ProcessPoolExecutor {
    let p = ProcessPoolExecutor::new(WORKERS).expect("pool");
    // Start both workers before timing.
    let warm: Vec<Future<u64>> = (0..64).map(|i| p.submit(task!(noop), i)).collect();
    for f in warm {
        f.result().expect("warm-up");
    }
    p
}

struct Row {
    name: &'static str,
    unit: &'static str,
    ours: f64,
    procspawn: Option<f64>,
    cpython: Option<f64>,
}

fn main() {
    concurrent_futures::init();
    procspawn::init();
    let reps = reps();
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let python_peers = std::env::var("BENCH_PY").map_or(true, |v| v != "0");
    if only != "sched" {
        throughput(reps, python_peers);
    }
    if only != "throughput" {
        let mut rows = sched::rows(3);
        if python_peers {
            let python = std::env::var("SCHED_PYTHON")
                .or_else(|_| std::env::var("PYTHON"))
                .unwrap_or_else(|_| "python3".into());
            sched::add_peers(&mut rows, &python);
        }
        sched::print(&rows);
    }
}

/// The throughput table: ours, procspawn and CPython.
fn throughput(reps: usize, python_peers: bool) {
    let mut rows = Vec::new();

    // Pool start to first result (a fresh pool each time).
    let ours = measure(reps, || {
        let t = Instant::now();
        let p = ProcessPoolExecutor::new(WORKERS).expect("pool");
        p.submit(task!(noop), 1).result().expect("first");
        let dt = t.elapsed().as_secs_f64();
        drop(p);
        dt
    });
    let theirs = measure(reps, || {
        let t = Instant::now();
        let p = procspawn::Pool::new(WORKERS).expect("procspawn pool");
        p.spawn(1u64, noop).join().expect("first");
        let dt = t.elapsed().as_secs_f64();
        p.kill();
        dt
    });
    rows.push(Row {
        name: "pool start + first result",
        unit: "ms",
        ours: ours * 1e3,
        procspawn: Some(theirs * 1e3),
        cpython: None,
    });

    let p = pool();
    let ours = measure(reps, || {
        let t = Instant::now();
        let fs: Vec<Future<u64>> = (0..ROUND_TRIPS).map(|i| p.submit(task!(noop), i)).collect();
        let s: u64 = fs.into_iter().map(|f| f.result().expect("noop")).sum();
        black_box(s);
        t.elapsed().as_secs_f64()
    });
    let ps = procspawn::Pool::new(WORKERS).expect("procspawn pool");
    let theirs = measure(reps.min(3), || {
        let t = Instant::now();
        let mut s = 0u64;
        let mut i = 0u64;
        while i < ROUND_TRIPS {
            let end = (i + PROCSPAWN_WINDOW as u64).min(ROUND_TRIPS);
            let hs: Vec<_> = (i..end).map(|x| ps.spawn(x, noop)).collect();
            for h in hs {
                s += h.join().expect("procspawn noop");
            }
            i = end;
        }
        black_box(s);
        t.elapsed().as_secs_f64()
    });
    rows.push(Row {
        name: "submit+result noop x10,000",
        unit: "tasks/s",
        ours: ROUND_TRIPS as f64 / ours,
        procspawn: Some(ROUND_TRIPS as f64 / theirs),
        cpython: None,
    });

    let ours = measure(reps, || {
        let t = Instant::now();
        let s: u64 = p.map(task!(noop), 0..MAPPED).map(|r| r.expect("map")).sum();
        black_box(s);
        t.elapsed().as_secs_f64()
    });
    rows.push(Row {
        name: "map noop x100,000 (automatic chunks)",
        unit: "items/s",
        ours: MAPPED as f64 / ours,
        procspawn: None,
        cpython: None,
    });
    let ours = measure(reps, || {
        let t = Instant::now();
        let s: u64 = p
            .map(task!(noop), 0..MAPPED)
            .chunksize(1000)
            .map(|r| r.expect("map"))
            .sum();
        black_box(s);
        t.elapsed().as_secs_f64()
    });
    rows.push(Row {
        name: "map noop x100,000 chunksize=1000",
        unit: "items/s",
        ours: MAPPED as f64 / ours,
        procspawn: None,
        cpython: None,
    });

    // The three take turns inside each repetition, and each row is the
    // median of the per-repetition speedups, so that a noisy stretch of the
    // machine hurts serial and parallel alike. Bursts of a few milliseconds
    // are at the mercy of the scheduler: these rows take more repetitions.
    for n in [1_000_000u64, 10_000_000, 100_000_000] {
        // 1e8 takes about as long per task (30 ms) as CPython's 1e6 (50 ms).
        let heavy_reps = if n >= 100_000_000 { reps } else { 4 * reps + 3 };
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..heavy_reps {
            let t = Instant::now();
            for _ in 0..HEAVY_TASKS {
                black_box(heavy_compute(black_box(n)));
            }
            let serial = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let v: Vec<u64> = p
                .map(task!(heavy_compute), vec![n; HEAVY_TASKS])
                .chunksize(1)
                .collect::<Result<_, _>>()
                .expect("heavy");
            black_box(v);
            ours.push(serial / t.elapsed().as_secs_f64());
            let t = Instant::now();
            let hs: Vec<_> = (0..HEAVY_TASKS)
                .map(|_| ps.spawn(n, heavy_compute))
                .collect();
            for h in hs {
                black_box(h.join().expect("procspawn heavy"));
            }
            theirs.push(serial / t.elapsed().as_secs_f64());
        }
        rows.push(Row {
            name: match n {
                1_000_000 => "heavy_compute(1e6) x8: speedup vs serial",
                10_000_000 => "heavy_compute(1e7) x8: speedup vs serial",
                _ => "heavy_compute(1e8) x8: speedup vs serial",
            },
            unit: "x",
            ours: median(ours),
            procspawn: Some(median(theirs)),
            cpython: None,
        });
    }
    ps.kill();

    let payload = ByteBuf::from(vec![7u8; BIG]);
    rows.push(megabytes_row(
        "100 MB argument, serde_bytes (one way)",
        measure(reps.min(5), || {
            big_trip(&p, task!(byte_len), &payload, |len: &usize| *len)
        }),
    ));
    rows.push(megabytes_row(
        "100 MB echo, serde_bytes (MB per second)",
        measure(reps.min(5), || {
            big_trip(&p, task!(echo), &payload, |b: &ByteBuf| b.len())
        }),
    ));
    let plain = vec![7u8; BIG];
    rows.push(megabytes_row(
        "100 MB echo, plain Vec<u8>",
        measure(reps.min(3), || {
            big_trip(&p, task!(echo_vec), &plain, Vec::len)
        }),
    ));
    drop(p);

    if python_peers {
        add_cpython(&mut rows);
    }
    print_table(&rows);
}

/// Submits one [`BIG`] argument and returns the seconds until its result
/// (whose size `len` reads) is back; the copy of the argument is not timed.
fn big_trip<A, R>(
    p: &ProcessPoolExecutor,
    task: Task<A, R>,
    arg: &A,
    len: impl Fn(&R) -> usize,
) -> f64
where
    A: Clone + serde::Serialize + Send + 'static,
    R: serde::de::DeserializeOwned + Send + 'static,
{
    let arg = arg.clone();
    let t = Instant::now();
    let back = p.submit(task, arg).result().expect("a 100 MB task");
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(len(&back), BIG);
    dt
}

/// A row of ours alone, in MB of payload per second, from seconds per trip.
fn megabytes_row(name: &'static str, seconds: f64) -> Row {
    Row {
        name,
        unit: "MB/s",
        ours: (BIG as f64 / 1e6) / seconds,
        procspawn: None,
        cpython: None,
    }
}

/// Runs the CPython peer and puts its figures beside ours.
fn add_cpython(rows: &mut [Row]) {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let peer = std::env::var("PYTHON_PEER").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/python_peer.py").into()
    });
    let out = Command::new(&python)
        .arg(&peer)
        .arg("process")
        .env("N", MAPPED.to_string())
        .output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            eprintln!("note: {python} {peer} did not run; CPython column left empty");
            return;
        }
    };
    let secs = |label: &str| -> Option<(f64, f64)> {
        let line = text.lines().find(|l| l.starts_with(label))?;
        let mut it = line.split_whitespace().rev();
        let _rate = it.next()?;
        let dt: f64 = it.next()?.trim_end_matches('s').parse().ok()?;
        let n: f64 = it.next()?.trim_start_matches("n=").parse().ok()?;
        Some((n, dt))
    };
    let serial = secs("serial heavy_compute(1e6) x8").map(|(_, dt)| dt);
    for row in rows.iter_mut() {
        row.cpython = match row.name {
            "pool start + first result" => {
                secs("process pool start + first result").map(|(_, dt)| dt * 1e3)
            }
            "submit+result noop x10,000" => {
                secs("process submit+result noop").map(|(n, dt)| n / dt)
            }
            "map noop x100,000 chunksize=1000" => {
                secs("process map noop chunksize=1000").map(|(n, dt)| n / dt)
            }
            "heavy_compute(1e6) x8: speedup vs serial" => {
                match (serial, secs("process heavy_compute(1e6) x8")) {
                    (Some(s), Some((_, dt))) => Some(s / dt),
                    _ => None,
                }
            }
            "100 MB argument, serde_bytes (one way)" => python_big(&python, "len"),
            "100 MB echo, serde_bytes (MB per second)" => python_big(&python, "echo"),
            _ => None,
        };
    }
}

/// CPython with one 100 MB `bytes` argument (`len` or `echo`), median of 3.
fn python_big(python: &str, task: &str) -> Option<f64> {
    let script = r#"
import sys, time
from concurrent.futures import ProcessPoolExecutor
def echo(b):
    return b
if __name__ == "__main__":
    task = len if sys.argv[1] == "len" else echo
    data = b"\x07" * (100 * 1024 * 1024)
    with ProcessPoolExecutor(max_workers=2) as ex:
        ex.submit(echo, b"").result()
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            r = ex.submit(task, data).result()
            ts.append(time.perf_counter() - t)
            assert r == len(data) or len(r) == len(data)
        ts.sort()
        print(ts[1])
"#;
    let dir = std::env::temp_dir().join(format!("cf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let file = dir.join("big.py");
    std::fs::write(&file, script).ok()?;
    let out = Command::new(python).arg(&file).arg(task).output().ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    let dt: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((BIG as f64 / 1e6) / dt)
}

fn print_table(rows: &[Row]) {
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{:44} {:>8} {:>14} {:>14} {:>14} {:>10}",
        "scenario (2 workers)", "unit", "ours", "procspawn", "CPython", "ours/CPy"
    );
    for r in rows {
        let ratio = match (r.unit, r.cpython) {
            // Lower is better for latency: invert so that >1 means faster.
            ("ms", Some(c)) => format!("{:.1}x", c / r.ours),
            (_, Some(c)) => format!("{:.1}x", r.ours / c),
            _ => "-".to_string(),
        };
        println!(
            "{:44} {:>8} {:>14.1} {:>14} {:>14} {:>10}",
            r.name,
            r.unit,
            r.ours,
            cell(r.procspawn),
            cell(r.cpython),
            ratio
        );
    }
}
