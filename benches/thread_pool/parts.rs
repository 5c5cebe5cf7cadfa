//! Parts of the thread-pool benchmark (`benches/thread_pool.rs`): the
//! context-switch counter, the CPython peer, medians and cells.

use std::process::Command;

use super::N;

// ---------------------------------------------------------------- context switches

/// Context switches of every live thread of this process so far (the
/// voluntary and involuntary counts of `/proc/self/task/*/status`). Threads
/// that have exited are not counted, so the `std::thread` peer's figure is
/// not shown. `None` where `/proc` is missing.
pub(crate) fn context_switches() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(status) = std::fs::read_to_string(task.ok()?.path().join("status")) else {
            continue; // the thread exited meanwhile
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

/// Runs `f`, adding the context switches it caused to `count`.
pub(crate) fn counting<R>(count: &mut Option<u64>, f: impl FnOnce() -> R) -> R {
    let before = context_switches();
    let r = f();
    *count = match (*count, before, context_switches()) {
        (Some(c), Some(b), Some(a)) => Some(c + a.saturating_sub(b)),
        _ => None,
    };
    r
}

// ---------------------------------------------------------------- CPython

/// Medians of CPython's rows, by row name: (tasks, seconds).
pub(crate) type PythonRows = Vec<(String, u64, f64)>;

fn python_peer_path() -> std::path::PathBuf {
    match std::env::var_os("PYTHON_PEER") {
        Some(p) => p.into(),
        None => {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/python_peer.py")
        }
    }
}

/// Parses `name  n=  100000    1.4567s   68650/s`.
fn parse_python_row(line: &str) -> Option<(String, u64, f64)> {
    let (name, rest) = line.split_once(" n=")?;
    let mut fields = rest.split_whitespace();
    let n = fields.next()?.parse().ok()?;
    let secs = fields.next()?.strip_suffix('s')?.parse().ok()?;
    Some((name.trim().to_string(), n, secs))
}

/// Runs the CPython peer `runs` times; per row the median seconds. `Err`
/// says why there is no CPython column.
pub(crate) fn run_python(runs: usize) -> Result<PythonRows, String> {
    if runs == 0 {
        return Err("skipped (BENCH_PY_RUNS=0)".into());
    }
    let script = python_peer_path();
    if !script.exists() {
        return Err(format!("skipped: {} not found", script.display()));
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut samples: Vec<(String, u64, Vec<f64>)> = Vec::new();
    for _ in 0..runs {
        let out = Command::new(&python)
            .arg(&script)
            .arg("thread")
            .env("N", N.to_string())
            .output()
            .map_err(|e| format!("skipped: cannot run {python}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "skipped: {python} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        for (name, n, secs) in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(parse_python_row)
        {
            match samples.iter_mut().find(|(m, _, _)| *m == name) {
                Some((_, _, v)) => v.push(secs),
                None => samples.push((name, n, vec![secs])),
            }
        }
    }
    if samples.is_empty() {
        return Err("skipped: no rows parsed from the CPython peer".into());
    }
    Ok(samples
        .into_iter()
        .map(|(name, n, mut v)| (name, n, median_f64(&mut v)))
        .collect())
}

/// The median; sorts `v`.
pub(crate) fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// One cell: tasks and median seconds.
#[derive(Clone, Copy)]
pub(crate) struct Cell {
    pub(crate) n: u64,
    pub(crate) secs: f64,
}

impl Cell {
    pub(crate) fn rate(self) -> f64 {
        self.n as f64 / self.secs
    }
}

pub(crate) fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.0}k/s", r / 1e3)
    } else {
        format!("{r:.0}/s")
    }
}

pub(crate) fn fmt_ratio(ours: Option<Cell>, peer: Option<Cell>) -> String {
    match (ours, peer) {
        (Some(a), Some(b)) => format!("{:.1}x", a.rate() / b.rate()),
        _ => "-".into(),
    }
}
