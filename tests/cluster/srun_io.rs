//! The TCP connection that carries a step's I/O between `srun` and
//! `slurmstepd`: the pool sets `TCP_NODELAY` on `srun`'s end (and asks it
//! to acknowledge at once what it reads), so that Slurm's messages of at
//! most 1 KB are not held for the delayed-ACK timer (`docs/performance.md`,
//! "srun's acknowledgements"). Checked on the socket itself, in a child
//! process whose only `srun` is its pool's.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::thread;
use std::time::Duration;

use concurrent_futures::launch::Slurm;
use concurrent_futures::task;
use rustix::net::{sockopt, AddressFamily};
use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};

use crate::cluster_common::{children, over_slurm};
use crate::process_common::{builder, test_path, ChildRun, LONG};

fn echo_bytes(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

/// The connected TCP sockets of process `pid`, by inode, and whether each
/// has `TCP_NODELAY`.
fn tcp_sockets(pid: u32) -> HashMap<String, bool> {
    let mut found = HashMap::new();
    let Some(pid_) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return found;
    };
    let pidfd = pidfd_open(pid_, PidfdFlags::empty()).expect("pidfd of srun");
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("srun's fds") {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        let Some(number) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !target.starts_with("socket:") {
            continue;
        }
        let Ok(fd): Result<OwnedFd, _> = pidfd_getfd(&pidfd, number, PidfdGetfdFlags::empty())
        else {
            continue;
        };
        let tcp = matches!(
            sockopt::socket_domain(&fd),
            Ok(AddressFamily::INET | AddressFamily::INET6)
        ) && matches!(rustix::net::getpeername(&fd), Ok(Some(_)));
        if tcp {
            found.insert(target, sockopt::tcp_nodelay(&fd).expect("TCP_NODELAY"));
        }
    }
    found
}

/// Run as a child process by the test below: a pool of one worker over
/// Slurm sends 100 KB each way (a hundred of Slurm's messages), then lists
/// its srun's connected TCP sockets twice, 300 ms apart.
#[test]
fn child_pool_lists_its_srun_sockets() {
    if std::env::var_os("CF_CHILD_SRUN_IO").is_none() {
        return;
    }
    let pool = builder()
        .launcher(Slurm::new())
        .max_workers(1)
        .build()
        .expect("pool");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let back = pool
        .submit(task!(echo_bytes), bytes.clone())
        .result_timeout(LONG);
    println!("SAME {}", back == Ok(bytes));
    let sruns = children(std::process::id(), "srun");
    println!("SRUNS {}", sruns.len());
    let list = |label: &str| {
        let sockets: Vec<String> = sruns
            .iter()
            .flat_map(|&srun| tcp_sockets(srun))
            .map(|(inode, nodelay)| format!("{inode}={nodelay}"))
            .collect();
        println!("{label} {}", sockets.join(" "));
    };
    list("FIRST");
    thread::sleep(Duration::from_millis(300));
    list("SECOND");
    drop(pool);
}

#[test]
fn srun_s_io_connection_sends_without_delay() {
    over_slurm(|| {
        let child = ChildRun::start(
            &test_path(module_path!(), "child_pool_lists_its_srun_sockets"),
            &[("CF_CHILD_SRUN_IO", "1")],
        );
        assert_eq!(child.line_after("SAME "), "true");
        assert_eq!(child.line_after("SRUNS "), "1");
        let parse = |line: String| -> HashMap<String, String> {
            line.split_whitespace()
                .filter_map(|s| s.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let first = parse(child.line_after("FIRST"));
        let second = parse(child.line_after("SECOND"));
        // The step's I/O connection lasts; an RPC connection of srun's
        // (a ping from slurmctld) may come and go between the two lists.
        let lasting: Vec<(&String, &String)> = first
            .iter()
            .filter(|(inode, _)| second.contains_key(*inode))
            .collect();
        assert_eq!(
            lasting.len(),
            1,
            "srun's TCP sockets: {first:?} then {second:?}"
        );
        assert_eq!(lasting[0].1, "true", "TCP_NODELAY on {}", lasting[0].0);
    });
}
