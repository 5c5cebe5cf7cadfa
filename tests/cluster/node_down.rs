//! A Slurm node set DOWN under a running worker: the task fails naming
//! Slurm, the remote worker is gone, and once the node is back the pool
//! goes on (under `restart_workers`).
//!
//! Setting the only node of the test Slurm DOWN revokes every allocation
//! on it, including the `salloc` the rest of the suite runs in. So this
//! test runs on its own, outside any allocation, after the suite:
//! `scripts/test` does that with `CF_NODE_DOWN=1` (`cargo test --test
//! cluster -- --exact node_down::a_node_set_down_fails_its_task_and_the_pool_goes_on_once_it_is_back`).
//! Inside an allocation, or without that variable, it says so and returns.

use std::process::Command;
use std::time::Duration;

use crate::cluster_common::{assert_fails_naming, busy_worker};
use crate::common::with_timeout;
use crate::process_common::*;
use concurrent_futures::launch::Slurm;
use concurrent_futures::task;

/// The node of the test Slurm (`NodeName=$(hostname -s)`).
fn node() -> String {
    let out = Command::new("hostname")
        .arg("-s")
        .output()
        .expect("hostname");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `scontrol update nodename=<node> state=<state>`, within 10 s.
fn set_state(state: &str) {
    let node = node();
    let mut cmd = Command::new("timeout");
    cmd.args(["10", "scontrol", "update", &format!("nodename={node}")])
        .arg(format!("state={state}"));
    if state == "down" {
        cmd.arg("reason=concurrent-futures test");
    }
    let status = cmd.status().expect("scontrol");
    assert!(status.success(), "scontrol update state={state}: {status}");
}

/// The node's state as `sinfo` prints it (`idle`, `down*`, `mix`, ...).
fn state() -> String {
    let out = Command::new("timeout")
        .args(["10", "sinfo", "-h", "-n", &node(), "-o", "%T"])
        .output()
        .expect("sinfo");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Resumes the node however the test ends (Slurm may have done so
/// already: then `resume` is refused, which is fine), and waits until it
/// takes jobs again.
struct Resume;

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("timeout")
            .args(["10", "scontrol", "update", &format!("nodename={}", node())])
            .arg("state=resume")
            .status();
        let back = within(Duration::from_secs(30), || {
            matches!(state().as_str(), "idle" | "mixed" | "allocated")
        });
        if !std::thread::panicking() {
            assert!(back, "the node did not come back: {}", state());
        }
    }
}

#[test]
fn a_node_set_down_fails_its_task_and_the_pool_goes_on_once_it_is_back() {
    if std::env::var_os("CF_NODE_DOWN").is_none() || std::env::var_os("SLURM_JOB_ID").is_some() {
        eprintln!(
            "skipped: sets the test Slurm's only node DOWN; scripts/test runs it on its own, \
             outside an allocation, with CF_NODE_DOWN=1"
        );
        return;
    }
    if std::env::var_os("SLURM_CONF").is_none() {
        // Fails under CI=true, else says what to install.
        let _ = crate::cluster_common::slurm();
        return;
    }
    // Under the binary's 120 s watchdog, so that a hang fails this test by name.
    with_timeout(Duration::from_secs(90), move || {
        let scratch = Scratch::new("node-down");
        // Outside an allocation each worker is a job of its own.
        let (pool, remote, running) = busy_worker(Slurm::new().srun_args(["--time=5"]), &scratch);
        let resume = Resume;
        set_state("down");
        assert_fails_naming(running, "slurm");
        assert!(
            within(Duration::from_secs(10), || !alive(remote)),
            "worker {remote} outlived its node"
        );
        drop(resume);
        let mut after = pool.submit(task!(square), 7);
        assert_eq!(after.result_timeout(Duration::from_secs(60)), Ok(49));
    });
}
