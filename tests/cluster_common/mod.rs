//! The daemons the cluster tests run against (started by
//! `scripts/test-cluster`), and pool builders for each launcher.
//!
//! A test that needs a daemon calls [`ssh_config`] or [`slurm`] first. When
//! the daemons are not there, it fails under `CI=true` and otherwise says
//! what to install and run, and returns.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use concurrent_futures::launch::{Launcher, Slurm, Ssh};
use concurrent_futures::{task, Error, Future, ProcessPoolBuilder, ProcessPoolExecutor};

use crate::common::with_timeout;
use crate::process_common::{builder, gate, pid, Scratch, LONG};

/// How long one cluster test may take over any launcher.
pub const LIMIT: Duration = Duration::from_secs(60);

/// How to get the daemons, for the message of a test that cannot run.
const HOW: &str = "apt-get install openssh-server openssh-client slurm-wlm munge \
    (or: scripts/test-cluster install), then run the tests with \
    `scripts/test-cluster test` (it starts the daemons and runs them inside `salloc -n 16`)";

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| v == "true" || v == "1")
}

/// Fails under CI, else prints why the test does not run.
fn unavailable(what: &str) -> Option<std::convert::Infallible> {
    assert!(
        !in_ci(),
        "{what} (CI=true: the cluster daemons must run); {HOW}"
    );
    eprintln!("skipped: {what}; to run it: {HOW}");
    None
}

/// The ssh config written by `scripts/test-cluster` (hosts `node1`,
/// `node2`, `down`, `unknown`, `denied`), or `None` after saying why.
pub fn ssh_config() -> Option<PathBuf> {
    match std::env::var_os("CF_SSH_CONFIG").map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        Some(p) => {
            unavailable(&format!("{} does not exist", p.display()))?;
            None
        }
        None => {
            unavailable("CF_SSH_CONFIG is not set (no test sshd)")?;
            None
        }
    }
}

/// The scratch directory of `scripts/test-cluster`.
pub fn cluster_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("CF_CLUSTER_DIR").expect("CF_CLUSTER_DIR is set with CF_SSH_CONFIG"),
    )
}

/// An ssh launcher on `hosts` (one slot each unless given) through the
/// test config.
pub fn ssh(config: &std::path::Path, hosts: &[(&str, usize)]) -> Ssh {
    let mut ssh = Ssh::new().ssh_args([std::ffi::OsString::from("-F"), config.into()]);
    for (h, slots) in hosts {
        ssh = ssh.host(*h, *slots);
    }
    ssh
}

/// Slurm tests share the allocation's CPUs: one at a time.
pub struct SlurmGuard(MutexGuard<'static, ()>);

/// Inside an allocation of at least 2 tasks: the lock that keeps Slurm
/// tests apart; else `None` after saying why.
pub fn slurm() -> Option<SlurmGuard> {
    static ONE: Mutex<()> = Mutex::new(());
    if std::env::var_os("SLURM_CONF").is_none() {
        unavailable("SLURM_CONF is not set (no test Slurm)")?;
    }
    let tasks: usize = std::env::var("SLURM_NTASKS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if std::env::var_os("SLURM_JOB_ID").is_none() || tasks < 2 {
        unavailable("not inside a Slurm allocation of 2 tasks (salloc -n 2)")?;
    }
    Some(SlurmGuard(ONE.lock().unwrap_or_else(|e| e.into_inner())))
}

/// Which launcher a suite runs over.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    Local,
    Ssh,
    Slurm,
}

/// Holds whatever a pool over `via` needs while it runs.
pub struct Env {
    _slurm: Option<SlurmGuard>,
}

/// A pool builder of 2 workers over `via`, or `None` (after saying why)
/// when its daemons are not there.
pub fn pool_builder(via: Via) -> Option<(ProcessPoolBuilder, Env)> {
    let env = Env { _slurm: None };
    let b = builder().max_workers(2);
    match via {
        Via::Local => Some((b, env)),
        Via::Ssh => {
            let config = ssh_config()?;
            Some((b.launcher(ssh(&config, &[("node1", 1), ("node2", 1)])), env))
        }
        Via::Slurm => {
            let guard = slurm()?;
            Some((
                b.launcher(Slurm::new()),
                Env {
                    _slurm: Some(guard),
                },
            ))
        }
    }
}

/// Runs `test` with the ssh config of [`ssh_config`], failing it after
/// [`LIMIT`]; returns at once (after saying why) when there is no test sshd.
#[track_caller]
pub fn over_ssh(test: impl FnOnce(PathBuf) + Send + 'static) {
    let Some(config) = ssh_config() else { return };
    with_timeout(LIMIT, move || test(config));
}

/// Runs `test` holding the lock of [`slurm`], failing it after [`LIMIT`];
/// returns at once (after saying why) outside an allocation.
#[track_caller]
pub fn over_slurm(test: impl FnOnce() + Send + 'static) {
    let Some(_slurm) = slurm() else { return };
    with_timeout(LIMIT, test);
}

/// Runs `test` on [`pool_builder`]`(via)`, failing it after [`LIMIT`];
/// returns at once (after saying why) when the daemons are not there.
#[track_caller]
pub fn over(via: Via, test: impl FnOnce(ProcessPoolBuilder) + Send + 'static) {
    let Some((b, _env)) = pool_builder(via) else {
        return;
    };
    with_timeout(LIMIT, move || test(b));
}

/// A pool of one worker over `Slurm::new()` (a step of this allocation),
/// and that worker's pid once it answered.
pub fn one_slurm_worker() -> (ProcessPoolExecutor, u32) {
    let pool = builder()
        .launcher(Slurm::new())
        .max_workers(1)
        .build()
        .expect("pool");
    let worker = pool
        .submit(task!(pid), ())
        .result_timeout(LONG)
        .expect("the worker's pid");
    (pool, worker)
}

/// A pool of one worker started by `launcher` under `restart_workers`, the
/// worker's pid, and a `gate` task (on `scratch`) running there.
pub fn busy_worker(
    launcher: impl Launcher,
    scratch: &Scratch,
) -> (ProcessPoolExecutor, u32, Future<u32>) {
    let pool = builder()
        .launcher(launcher)
        .max_workers(1)
        .restart_workers(true)
        .build()
        .expect("pool");
    let remote = pool
        .submit(task!(pid), ())
        .result_timeout(LONG)
        .expect("the worker's pid");
    let running = pool.submit(task!(gate), scratch.dir());
    scratch.wait_started(1);
    (pool, remote, running)
}

/// Waits (at most [`LONG`]) for `running` (on a [`busy_worker`], under
/// `restart_workers`) to fail with `WorkerDied` naming `host`
/// (" on {host}"); returns the message.
#[track_caller]
pub fn assert_fails_naming(mut running: Future<u32>, host: &str) -> String {
    let err = running
        .result_timeout(LONG)
        .expect_err("the connection dropped");
    let Error::WorkerDied(reason) = &err else {
        panic!("{err}")
    };
    assert!(reason.contains(&format!(" on {host}")), "{reason}");
    reason.clone()
}

/// Waits (at most [`LONG`]) for `running` to fail with `HostLost` naming
/// `host`: the link to its host died under it. Returns the message.
#[track_caller]
pub fn assert_host_lost(mut running: Future<u32>, host: &str) -> String {
    let err = running.result_timeout(LONG).expect_err("the link died");
    let Error::HostLost(reason) = &err else {
        panic!("expected HostLost, got {err:?}")
    };
    assert!(reason.contains(&format!(" on {host}")), "{reason}");
    reason.clone()
}

/// The allocation's one node (the test Slurm has one).
pub fn slurm_node() -> String {
    std::env::var("SLURM_JOB_NODELIST").expect("inside an allocation")
}

/// The parent process of `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The processes whose parent is `parent` and whose name is `comm`.
pub fn children(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let ppid = stat[close + 2..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok());
            &stat[open + 1..close] == comm && ppid == Some(parent)
        })
        .collect()
}

/// The ssh clients this test process runs to `host`.
pub fn ssh_clients(host: &str) -> Vec<u32> {
    children(std::process::id(), "ssh")
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == host.as_bytes()))
        })
        .collect()
}

/// A fresh cache directory for shipped programs (not created), shared by
/// the "hosts" (they are all this machine).
pub fn fresh_cache(tag: &str) -> PathBuf {
    let dir = cluster_dir().join(format!("cache-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

/// Writes an executable shell script.
pub fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).expect("write a script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("make it executable");
}
