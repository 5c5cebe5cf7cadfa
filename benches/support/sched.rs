//! Scheduling quality on uneven work: the scenarios of
//! `benches/peers/sched_peer.py`, ours beside CPython, loky and dask.

use std::process::Command;
use std::time::{Duration, Instant};

use concurrent_futures::{as_completed, task, Future, ProcessPoolExecutor};

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn noop(x: u64) -> u64 {
    x
}

/// The burst scenario's tasks, after 50 no-ops on 2 workers: ideal 4 s (the
/// four 1 s tasks run on the other worker), 6 s if they wait behind the 4 s
/// one in the pipe of the worker that runs it.
const BURST: [u64; 5] = [4000, 1000, 1000, 1000, 1000];

/// The uneven task list of the peer script: 1-40 ms, every 25th 400 ms.
fn uneven() -> Vec<u64> {
    (0..200u64)
        .map(|i| {
            if i % 25 == 7 {
                400
            } else {
                1 + (i * 7919) % 40
            }
        })
        .collect()
}

/// Greedy list scheduling: each task to the least loaded of `w` workers.
fn list_schedule(d: &[u64], w: usize) -> u64 {
    let mut free = vec![0u64; w];
    for x in d {
        let i = (0..w).min_by_key(|&i| free[i]).unwrap_or(0);
        free[i] += x;
    }
    free.into_iter().max().unwrap_or(0)
}

fn warm(p: &ProcessPoolExecutor, n: usize) {
    let fs: Vec<Future<u64>> = (0..n).map(|_| p.submit(task!(sleep_ms), 5)).collect();
    for f in fs {
        f.result().expect("warm-up");
    }
}

/// One scenario: the worst and the median of its rounds (ratios to the
/// ideal), with the peers' figures when their script ran.
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) worst: f64,
    pub(crate) median: f64,
    pub(crate) target: &'static str,
    pub(crate) peers: Vec<(&'static str, Option<f64>)>,
}

fn spread(mut xs: Vec<f64>) -> (f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() - 1], xs[xs.len() / 2])
}

/// Runs our side of every scenario.
pub(crate) fn rows(rounds: usize) -> Vec<Row> {
    let d = uneven();
    let ideal = list_schedule(&d, 4) as f64;
    let p = ProcessPoolExecutor::new(4).expect("pool");
    warm(&p, 8);
    let uneven_rounds = (0..rounds.max(3))
        .map(|_| {
            let t = Instant::now();
            let fs: Vec<Future<u64>> = d.iter().map(|&ms| p.submit(task!(sleep_ms), ms)).collect();
            let sum: u64 = fs.into_iter().map(|f| f.result().expect("sleep")).sum();
            assert_eq!(sum, d.iter().sum::<u64>());
            t.elapsed().as_secs_f64() * 1e3 / ideal
        })
        .collect();
    drop(p);

    let p = ProcessPoolExecutor::new(2).expect("pool");
    warm(&p, 4);
    let behind_rounds = (0..rounds.max(3))
        .map(|_| {
            let t = Instant::now();
            let long = p.submit(task!(sleep_ms), 2000);
            let shorts: Vec<Future<u64>> = (0..10).map(|_| p.submit(task!(sleep_ms), 50)).collect();
            for f in as_completed(shorts) {
                f.result().expect("short");
            }
            let ratio = t.elapsed().as_secs_f64() * 1e3 / 500.0;
            long.result().expect("long");
            ratio
        })
        .collect();
    drop(p);

    let p = ProcessPoolExecutor::new(2).expect("pool");
    warm(&p, 4);
    let burst_rounds = (0..rounds.max(3))
        .map(|_| {
            let noops: Vec<Future<u64>> = (0..50).map(|i| p.submit(task!(noop), i)).collect();
            for f in noops {
                f.result().expect("noop");
            }
            let t = Instant::now();
            let fs: Vec<Future<u64>> = BURST
                .iter()
                .map(|&ms| p.submit(task!(sleep_ms), ms))
                .collect();
            let sum: u64 = fs.into_iter().map(|f| f.result().expect("sleep")).sum();
            assert_eq!(sum, BURST.iter().sum::<u64>());
            t.elapsed().as_secs_f64() * 1e3 / BURST[0] as f64
        })
        .collect();
    drop(p);

    let fresh = |workers: usize, ms: u64| -> Vec<f64> {
        (0..rounds.max(5))
            .map(|_| {
                let t = Instant::now();
                let p = ProcessPoolExecutor::new(workers).expect("pool");
                let fs: Vec<Future<u64>> = (0..workers)
                    .map(|_| p.submit(task!(sleep_ms), ms))
                    .collect();
                for f in fs {
                    f.result().expect("long");
                }
                let ratio = t.elapsed().as_secs_f64() * 1e3 / ms as f64;
                drop(p);
                ratio
            })
            .collect()
    };
    let row = |name, rounds, target| {
        let (worst, median) = spread(rounds);
        Row {
            name,
            worst,
            median,
            target,
            peers: Vec::new(),
        }
    };
    vec![
        row(
            "uneven: 200 sleeps on 4 workers, makespan / list schedule",
            uneven_rounds,
            "<= 1.05",
        ),
        row(
            "shorts behind long: 10 x 50 ms after 2 s, 2 workers, / 500 ms",
            behind_rounds,
            "<= 1.1",
        ),
        row(
            "two long on two fresh workers: 2 x 500 ms, / 500 ms",
            fresh(2, 500),
            "<= 1.05 + start",
        ),
        row(
            "four long on four fresh workers: 4 x 1 s, / 1 s",
            fresh(4, 1000),
            "~1 (Python)",
        ),
        row(
            "burst: 50 no-ops, then 4 s + 4 x 1 s, 2 workers, / 4 s",
            burst_rounds,
            "<= 1.05 (4.2 s)",
        ),
    ]
}

/// Runs `sched_peer.py` (CPython, loky, dask; the last two if installed)
/// and puts their figures beside ours.
pub(crate) fn add_peers(rows: &mut [Row], python: &str) {
    let peer = std::env::var("SCHED_PEER").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/benches/peers/sched_peer.py").into()
    });
    let text = match Command::new(python).arg(&peer).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            eprintln!("note: {python} {peer} did not run; the peer columns are empty");
            return;
        }
    };
    let figure = |who: &str, what: &str| -> Option<f64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{who}: {what}")))?;
        let word = line.split_whitespace().find(|w| w.ends_with('x'))?;
        word.trim_end_matches('x').parse().ok()
    };
    for who in ["cpython", "loky", "dask"] {
        if text
            .lines()
            .any(|l| l.starts_with(&format!("{who}: not installed")))
        {
            eprintln!("note: {who} is not installed for {python}; its column is empty");
        }
    }
    // The peer script's line for each row, in the order of `rows`.
    let keys = [
        Some("uneven submit worst"),
        Some("shorts behind long"),
        Some("two long on two fresh workers"),
        None,
        Some("burst then long"),
    ];
    for (row, key) in rows.iter_mut().zip(keys) {
        let Some(key) = key else { continue };
        row.peers = ["cpython", "loky", "dask"]
            .into_iter()
            .map(|who| (who, figure(who, key)))
            .collect();
    }
}

pub(crate) fn print(rows: &[Row]) {
    println!();
    println!(
        "{:62} {:>7} {:>7} {:>16} {:>8} {:>8} {:>8}",
        "scheduling (ratio to ideal)", "worst", "median", "target", "CPython", "loky", "dask"
    );
    for r in rows {
        let peer = |who: &str| {
            r.peers
                .iter()
                .find(|(w, _)| *w == who)
                .and_then(|(_, v)| *v)
                .map_or_else(|| "-".to_string(), |v| format!("{v:.2}"))
        };
        println!(
            "{:62} {:>7.2} {:>7.2} {:>16} {:>8} {:>8} {:>8}",
            r.name,
            r.worst,
            r.median,
            r.target,
            peer("cpython"),
            peer("loky"),
            peer("dask")
        );
    }
}
