//! The figures of one agent per host (issue 14), against the loopback
//! sshds of `scripts/test-cluster` at OpenSSH's stock settings, and inside
//! a Slurm allocation when there is one.
//!
//! The "remote" hosts are this machine (127.0.0.1, 127.0.0.2), so a task
//! and the bench see the same filesystem: the gate below uses that to know
//! when every worker is up without trusting any clock but the bench's.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use concurrent_futures::launch::{Slurm, Ssh};
use concurrent_futures::{task, Future, ProcessPoolBuilder, ProcessPoolExecutor};
use serde::{Deserialize, Serialize};

use crate::stats::median;
use crate::{noop, reps, row};

/// How long a gate waits for all its workers before giving up.
const GATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Row "64 workers, 20 ms tasks, 10 rounds".
const ROUND_SLOTS: usize = 64;
const ROUNDS: usize = 10;
const NAP_MS: u64 = 20;
/// Row "round trips through one host link": as in `benches/process_pool.rs`
/// (10,000 no-ops submitted, then their results), and sequential ones
/// (submit, result, next) as dask's peer measures them.
const PIPELINED: u64 = 10_000;
const SEQUENTIAL: u64 = 1_000;

/// A barrier across workers: each task creates `dir/<its pid>`, then waits
/// until the bench opens the gate once `n` files are there (or the
/// timeout), so no worker can take two gate tasks, and the bench learns the
/// moment the `n`-th worker started a task by watching the directory.
#[derive(Serialize, Deserialize, Clone)]
pub(crate) struct Gate {
    dir: String,
    timeout_ms: u64,
}

fn gate(g: Gate) -> u32 {
    let pid = std::process::id();
    let dir = Path::new(&g.dir);
    std::fs::write(dir.join(pid.to_string()), b"").expect("gate file");
    let end = Instant::now() + Duration::from_millis(g.timeout_ms);
    // The bench opens the gate (`OPEN`) once all n are in. Each gate
    // only looks for that one file: n gates each listing the directory
    // every millisecond kept 2 cores busy at 256 workers and slowed the
    // starts being measured.
    let open = dir.join(OPEN);
    while Instant::now() < end && !open.exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    pid
}

/// The file that opens the gates.
const OPEN: &str = "open";

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

/// A scratch directory of this run, empty.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cf-bench-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// What a gated start saw: how long until `n` workers had each started a
/// task (counted from `since`), and how many distinct workers answered.
struct Up {
    seconds: Option<f64>,
    distinct: usize,
    error: Option<String>,
}

/// Submits `n` gate tasks to `pool` and watches them: the time is taken
/// when the `n`-th gate file appears, that is when `n` distinct workers
/// are running a task at once (a worker holds its gate until all are in).
fn gated_start(pool: &ProcessPoolExecutor, n: usize, since: Instant) -> Up {
    let dir = scratch("gate");
    let g = Gate {
        dir: dir.to_string_lossy().into_owned(),
        timeout_ms: GATE_TIMEOUT.as_millis() as u64,
    };
    let fs: Vec<Future<u32>> = (0..n)
        .map(|_| pool.submit(task!(gate), g.clone()))
        .collect();
    let mut seconds = None;
    let end = Instant::now() + GATE_TIMEOUT;
    while Instant::now() < end {
        if count(&dir) >= n {
            seconds = Some(since.elapsed().as_secs_f64());
            break;
        }
        if fs.iter().all(|f| f.done()) {
            break; // all failed (a broken pool), or the timeout passed
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = std::fs::write(dir.join(OPEN), b"");
    let mut pids = HashSet::new();
    let mut error = None;
    for f in fs {
        match f.result() {
            Ok(pid) => {
                pids.insert(pid);
            }
            Err(e) => {
                error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Up {
        seconds,
        distinct: pids.len(),
        error,
    }
}

fn ssh(config: &OsString) -> Ssh {
    Ssh::new().ssh_args([OsString::from("-F"), config.clone()])
}

fn pool(launcher: Ssh) -> ProcessPoolBuilder {
    ProcessPoolExecutor::builder().launcher(launcher)
}

/// This process's thread count (`Threads:` of /proc/self/status).
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Pipelined round trips per second through `pool`, the median of `reps`
/// runs: `n` no-ops submitted, then their results (`benches/process_pool.rs`'s
/// definition).
pub(crate) fn pipelined_round_trips(pool: &ProcessPoolExecutor, n: u64, reps: usize) -> f64 {
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                let fs: Vec<Future<u64>> = (0..n).map(|i| pool.submit(task!(noop), i)).collect();
                let s: u64 = fs.into_iter().map(|f| f.result().expect("noop")).sum();
                std::hint::black_box(s);
                n as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// This process's thread count once it has not changed for a second (at
/// most 10 s): the threads of links closing meanwhile are gone.
fn settled_threads() -> usize {
    let mut last = threads();
    let mut since = Instant::now();
    let began = since;
    while since.elapsed() < std::time::Duration::from_secs(1)
        && began.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now = threads();
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// The processes under this one (children, theirs, ...) whose command
/// name is `comm`, from /proc.
fn descendants_named(comm: &str) -> usize {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid, name == comm));
        }
    }
    let mut ours: HashSet<u32> = HashSet::from([std::process::id()]);
    // Grow the set of descendants until it stops growing.
    loop {
        let before = ours.len();
        for &(pid, ppid, _) in &parent_of {
            if ours.contains(&ppid) {
                ours.insert(pid);
            }
        }
        if ours.len() == before {
            break;
        }
    }
    parent_of
        .iter()
        .filter(|&&(pid, _, named)| named && pid != std::process::id() && ours.contains(&pid))
        .count()
}

fn up_figure(ups: &[Up], n: usize) -> String {
    let seconds: Vec<f64> = ups.iter().filter_map(|u| u.seconds).collect();
    let worst = ups.iter().map(|u| u.distinct).min().unwrap_or(0);
    let mut s = if seconds.len() == ups.len() {
        format!("{worst} of {n} up in {:.0} ms", 1e3 * median(seconds))
    } else {
        format!(
            "{worst} of {n} up ({} of {} runs never had all {n})",
            ups.len() - seconds.len(),
            ups.len()
        )
    };
    if let Some(e) = ups.iter().find_map(|u| u.error.as_ref()) {
        s.push_str(&format!("; error: {e}"));
    }
    s
}

/// Every host row; `config` is `CF_SSH_CONFIG`. Returns our round trips
/// through one host link (pipelined, sequential), for dask's rows.
pub(crate) fn rows(config: Option<&OsString>) -> Option<(f64, f64)> {
    let reps = reps();
    let Some(config) = config else {
        for name in [
            "1 host x 16 / 64 slots: workers up (warm cache)",
            "2 hosts x 32 slots: ssh clients / parent threads",
            "64 workers on one host, 20 ms tasks, 10 rounds: makespan / ideal",
            "round trips through one host link (2 slots)",
            "bytes shipped on a cold cache, 1 host x 32 slots",
        ] {
            row(
                "ssh",
                name,
                "skipped (no CF_SSH_CONFIG: scripts/test-cluster)".into(),
            );
        }
        slurm_steps();
        return None;
    };

    // Warm the default cache: this build is on node1 and node2 before the
    // "warm cache" rows.
    let warm = pool(ssh(config).host("node1", 1).host("node2", 1))
        .build()
        .expect("pool");
    for f in [warm.submit(task!(noop), 1), warm.submit(task!(noop), 2)] {
        f.result().expect("warm-up over ssh");
    }
    warm.shutdown();

    // 1. Build to n workers up: a fresh launcher and pool each time (so the
    // host check, `ssh node1 exit 0`, is in it, as for a new program), the
    // binary already cached; the clock stops when n distinct workers are
    // each running a gate task (see `gated_start`). "k of n": the fewest
    // distinct workers any run saw.
    for n in [16, 64] {
        let ups: Vec<Up> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                let p = pool(ssh(config).host("node1", n)).build().expect("pool");
                let up = gated_start(&p, n, t);
                p.shutdown();
                up
            })
            .collect();
        row(
            "ssh",
            &format!("1 host x {n} slots: workers up (warm cache)"),
            up_figure(&ups, n),
        );
    }

    // 2. With 64 workers up on 2 hosts x 32 (all gated, so all started),
    // the `ssh` processes under this one and this process's threads less
    // those it had before the pool; beside it, the same for 1 host x 1 slot
    // (one link, one worker: what a link costs whatever its slots).
    let cost = |hosts: &[(&str, usize)]| -> (usize, isize, Up) {
        // The links of the pools before close a second after their last
        // worker; their threads end then.
        let before = settled_threads();
        let launcher = hosts.iter().fold(ssh(config), |s, &(h, k)| s.host(h, k));
        let n = hosts.iter().map(|h| h.1).sum();
        let t = Instant::now();
        let p = pool(launcher).build().expect("pool");
        let up = gated_start(&p, n, t);
        let clients = descendants_named("ssh");
        let grown = threads() as isize - before as isize;
        p.shutdown();
        (clients, grown, up)
    };
    let (clients, grown, up) = cost(&[("node1", 32), ("node2", 32)]);
    let (one_clients, one_grown, _) = cost(&[("node1", 1)]);
    row(
        "ssh",
        "2 hosts x 32 slots: ssh clients / parent threads",
        format!(
            "{clients} / +{grown} ({}; 1 host x 1 slot: {one_clients} / +{one_grown})",
            up_figure(&[up], 64)
        ),
    );
    // Hundreds of workers: 4 hosts (aliases of the two loopback sshds) x
    // 64 slots, 256 workers on this machine.
    let (clients, grown, up) = cost(&[("node1", 64), ("node2", 64), ("wide1", 64), ("wide2", 64)]);
    row(
        "ssh",
        "4 hosts x 64 slots: ssh clients / parent threads",
        format!("{clients} / +{grown} ({})", up_figure(&[up], 256)),
    );

    // 3. Job steps of a Slurm pool.
    slurm_steps();

    // 4. 640 tasks of 20 ms sleep submitted at once on 64 slots of one
    // host, the pool warmed (64 gated tasks: every worker up); makespan is
    // first submit to last result, ideal 10 x 20 ms.
    let p = pool(ssh(config).host("node1", ROUND_SLOTS))
        .build()
        .expect("pool");
    let up = gated_start(&p, ROUND_SLOTS, Instant::now());
    if up.distinct == ROUND_SLOTS {
        let ideal = (ROUNDS as u64 * NAP_MS) as f64 / 1e3;
        let ratios: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                let fs: Vec<Future<u64>> = (0..ROUND_SLOTS * ROUNDS)
                    .map(|_| p.submit(task!(nap), NAP_MS))
                    .collect();
                for f in fs {
                    f.result().expect("nap");
                }
                t.elapsed().as_secs_f64() / ideal
            })
            .collect();
        row(
            "ssh",
            "64 workers on one host, 20 ms tasks, 10 rounds: makespan / ideal",
            format!(
                "{:.2}x ({:.0} ms / {:.0} ms)",
                median(ratios.clone()),
                median(ratios) * ideal * 1e3,
                ideal * 1e3
            ),
        );
    } else {
        row(
            "ssh",
            "64 workers on one host, 20 ms tasks, 10 rounds: makespan / ideal",
            format!("not run: {}", up_figure(&[up], ROUND_SLOTS)),
        );
    }
    p.shutdown();

    // 5. Round trips through one host link: node1 with 2 slots, warmed by
    // 64 no-ops. Pipelined is `benches/process_pool.rs`'s definition
    // (10,000 submitted, then the results); sequential waits for each
    // result before the next submit, as dask's peer does.
    let p = pool(ssh(config).host("node1", 2)).build().expect("pool");
    let warm: Vec<Future<u64>> = (0..64).map(|i| p.submit(task!(noop), i)).collect();
    for f in warm {
        f.result().expect("warm");
    }
    let pipelined = pipelined_round_trips(&p, PIPELINED, reps);
    let sequential = median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                for i in 0..SEQUENTIAL {
                    std::hint::black_box(p.submit(task!(noop), i).result().expect("noop"));
                }
                SEQUENTIAL as f64 / t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    p.shutdown();
    // The same pipelined round trips with 64 workers behind the one link:
    // what one driver thread serving 64 workers costs.
    let p = pool(ssh(config).host("node1", ROUND_SLOTS))
        .build()
        .expect("pool");
    let up = gated_start(&p, ROUND_SLOTS, Instant::now());
    let wide = pipelined_round_trips(&p, PIPELINED, reps);
    p.shutdown();
    row(
        "ssh",
        "round trips through one host link (64 slots), pipelined x10,000",
        format!("{wide:.0}/s ({})", up_figure(&[up], ROUND_SLOTS)),
    );
    row(
        "ssh",
        "round trips through one host link (2 slots), pipelined x10,000",
        format!("{:.0}/s", pipelined),
    );
    row(
        "ssh",
        "round trips through one host link (2 slots), sequential x1,000",
        format!("{:.0}/s", sequential),
    );

    // 8. A cold cache: a fresh `cache_dir`, and `ssh` wrapped by a script
    // that counts the bytes this process writes to each ssh client's stdin
    // (`tee` into `wc -c`). Those are the shipped binaries plus the link's
    // frames (the handshake and 32 small gate tasks: a few kB), so
    // copies = bytes / the binary's size.
    row(
        "ssh",
        "bytes shipped on a cold cache, 1 host x 32 slots",
        cold_copies(config, 32),
    );
    Some((pipelined, sequential))
}

const WRAPPER: &str = r#"#!/bin/bash
# Counts the bytes on this ssh client's stdin: one "start" line in
# "$0.starts" per run, one byte count in "$0.bytes" when stdin ends.
echo start >>"$0.starts"
exec < <(exec tee >(exec wc -c >>"$0.bytes"))
exec ssh "$@"
"#;

fn cold_copies(config: &OsString, slots: usize) -> String {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("cold");
    let wrapper = dir.join("ssh");
    std::fs::write(&wrapper, WRAPPER).expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let cache = dir.join("cache");
    let binary = std::env::current_exe()
        .and_then(std::fs::metadata)
        .map(|m| m.len())
        .unwrap_or(0);
    let launcher = ssh(config)
        .ssh_program(&wrapper)
        .cache_dir(cache.to_string_lossy().into_owned())
        .host("node1", slots);
    let t = Instant::now();
    let p = pool(launcher).build().expect("pool");
    let up = gated_start(&p, slots, t);
    p.shutdown();
    // Each tee's count is written when its stdin ends: wait for all.
    let lines = |name: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let end = Instant::now() + Duration::from_secs(10);
    while lines("ssh.bytes").len() < lines("ssh.starts").len() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let runs = lines("ssh.starts").len();
    let counts = lines("ssh.bytes");
    let bytes: u64 = counts
        .iter()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .sum();
    let _ = std::fs::remove_dir_all(&dir);
    let mut s = format!(
        "{:.2} copies ({bytes} bytes into {runs} ssh runs, binary {binary} bytes; {})",
        bytes as f64 / binary.max(1) as f64,
        up_figure(&[up], slots),
    );
    if counts.len() < runs {
        s.push_str(&format!("; {} runs never reported", runs - counts.len()));
    }
    s
}

/// Row 3, inside an allocation (`SLURM_JOB_ID`): a Slurm pool of the
/// allocation's tasks (`SLURM_NTASKS`, 16 under `salloc -n 16`), every
/// worker up (gated), then the job's steps from `squeue -h -s -j`: those
/// named `concurrent-futures-agent-*` and all of them.
fn slurm_steps() {
    const NAME: &str = "salloc -n 16: job steps";
    let Ok(job) = std::env::var("SLURM_JOB_ID") else {
        row("srun", NAME, "skipped (not inside salloc)".into());
        return;
    };
    let n: usize = std::env::var("SLURM_NTASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let t = Instant::now();
    let p = match ProcessPoolExecutor::builder()
        .launcher(Slurm::new())
        .max_workers(n)
        .build()
    {
        Ok(p) => p,
        Err(e) => {
            row("srun", NAME, format!("no pool: {e}"));
            return;
        }
    };
    let up = gated_start(&p, n, t);
    let steps = Command::new("squeue")
        .args(["-h", "-s", "-j", &job, "-o", "%i %j"])
        .output();
    p.shutdown();
    let figure = match steps {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let agents = all
                .iter()
                .filter(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|name| name.starts_with("concurrent-futures-agent"))
                })
                .count();
            format!(
                "{agents} (of {} steps in all, with the allocation's own; {} workers: {})",
                all.len(),
                n,
                up_figure(&[up], n)
            )
        }
        Ok(out) => format!(
            "squeue failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("cannot run squeue: {e}"),
    };
    row("srun", &format!("salloc -n {n}: job steps"), figure);
}

/// dask's SSHCluster on node1 of the same sshd, once per size in
/// `BENCH_DASK_SSH_WORKERS` (default 2,16,64): its start time, its N x 1 s
/// on N distinct workers, round trips and map, with ours beside where we
/// have the same figure.
pub(crate) fn dask_ssh(python: &OsString, config: Option<&OsString>, ours: Option<(f64, f64)>) {
    let Some(config) = config else {
        row(
            "dask SSHCluster",
            "skipped (no CF_SSH_CONFIG)",
            String::new(),
        );
        return;
    };
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers/dask_ssh_peer.py");
    let sizes = std::env::var("BENCH_DASK_SSH_WORKERS").unwrap_or_else(|_| "2,16,64".into());
    for n in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let out = Command::new(python)
            .arg(&peer)
            .args(["node1", &n.to_string()])
            .env("CF_SSH_CONFIG", config)
            .env("PYTHONWARNINGS", "ignore")
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                row(
                    "dask SSHCluster",
                    &format!("{n} workers"),
                    format!("cannot run: {e}"),
                );
                continue;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines() {
            let (name, value) = line.split_once(": ").unwrap_or((line, ""));
            let mut value = value.to_string();
            // Ratios to ours, like for like, for the 2-worker run (ours
            // has 2 slots on one link).
            let rate = value.trim_end_matches("/s").parse::<f64>().ok();
            if let (Some(rate), Some((pipelined, sequential)), 2) = (rate, ours, n) {
                if name.ends_with("pipelined round trips") {
                    value.push_str(&format!(" (ours {:.0}x)", pipelined / rate));
                } else if name.ends_with("round trips") {
                    value.push_str(&format!(" (ours {:.0}x)", sequential / rate));
                }
            }
            row("dask SSHCluster", name, value);
        }
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().last().unwrap_or("").to_string();
            row(
                "dask SSHCluster",
                &format!("{n} workers"),
                format!("failed ({}): {last}", out.status),
            );
        }
    }
}
