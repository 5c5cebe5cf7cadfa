//! What fails, and how, with workers on other machines: hosts that cannot
//! be reached, connections that drop mid-task, a killed pool, a missing or
//! foreign worker program, and the shipped program's cache. Against the
//! real sshds of `scripts/test-cluster` (see `cluster_common`).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::cluster_common::{
    assert_fails_naming, assert_host_lost, busy_worker, children, cluster_dir, fresh_cache,
    over_slurm, over_ssh, slurm_node, ssh, ssh_config, write_script,
};
use crate::process_common::*;
use concurrent_futures::task;

#[track_caller]
fn assert_gone(pid: u32) {
    assert!(
        within(Duration::from_secs(5), || !alive(pid)),
        "remote worker {pid} still runs"
    );
}

#[test]
fn unreachable_hosts_are_named_with_ssh_s_message() {
    over_ssh(move |config| {
        for (host, message) in [
            ("down", "Connection refused"),
            ("unknown", "Could not resolve hostname"),
            ("denied", "Permission denied"),
        ] {
            let pool = builder()
                .launcher(ssh(&config, &[(host, 2)]))
                .build()
                .expect("pool");
            let mut fut = pool.submit(task!(square), 2);
            let err = fut
                .result_timeout(LONG)
                .expect_err("no host can run it")
                .to_string();
            assert!(err.contains(&format!("{host}: ")), "{err}");
            assert!(err.contains(message), "{err}");
            assert!(err.contains("exited with code 255"), "{err}");
        }
    });
}

#[test]
fn a_dead_host_does_not_break_the_others() {
    over_ssh(move |config| {
        let pool = builder()
            .launcher(ssh(&config, &[("down", 2), ("node1", 2)]))
            .restart_workers(true)
            .build()
            .expect("pool");
        assert_eq!(pool.max_workers(), 4);
        let futs: Vec<_> = (0..8).map(|i| pool.submit(task!(square), i)).collect();
        for (i, mut f) in futs.into_iter().enumerate() {
            assert_eq!(f.result_timeout(LONG), Ok((i * i) as u64));
        }
    });
}

/// Task: the address of the sshd this worker came through (the third
/// field of `SSH_CONNECTION`), after waiting (at most `LONG`) until `n`
/// workers have marked `dir`: so `n` of these run at once, on `n` workers.
fn sshd_address(dir: String, n: usize) -> String {
    let me = std::process::id();
    let _ = fs::write(format!("{dir}/here-{me}"), b"");
    let deadline = std::time::Instant::now() + LONG;
    while std::time::Instant::now() < deadline {
        let here = fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        if here >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::env::var("SSH_CONNECTION")
        .ok()
        .and_then(|c| c.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn every_worker_goes_to_a_host_with_a_free_slot() {
    // node1 and node2 have one slot each: the two workers must land on
    // both, whichever host's check answers first.
    over_ssh(move |config| {
        for round in 0..3 {
            let dir = Scratch::new("slots");
            let pool = builder()
                .launcher(ssh(&config, &[("node1", 1), ("node2", 1)]))
                .build()
                .expect("pool");
            let futs: Vec<_> = (0..2)
                .map(|_| pool.submit(task!(sshd_address), (dir.dir(), 2)))
                .collect();
            let mut seen: Vec<String> = futs
                .into_iter()
                .map(|mut f| f.result_timeout(LONG).expect("an address"))
                .collect();
            seen.sort();
            assert_eq!(seen, ["127.0.0.1", "127.0.0.2"], "round {round}");
        }
    });
}

#[test]
fn a_dead_host_is_retried_with_backoff() {
    over_ssh(move |config| {
        // A client that logs every connection, then runs the real ssh.
        let dir = Scratch::new("backoff");
        let log = dir.path().join("calls");
        let wrapper = dir.path().join("ssh");
        write_script(
            &wrapper,
            &format!(
                "#!/bin/sh\necho x >> '{}'\nexec ssh \"$@\"\n",
                log.display()
            ),
        );
        let launcher = ssh(&config, &[("down", 1)]).ssh_program(wrapper.as_os_str());
        let pool = builder()
            .launcher(launcher)
            .restart_workers(true)
            .build()
            .expect("pool");
        let start = Instant::now();
        let mut failures = 0;
        // At least 1.5 s and more than 20 submits (a loaded machine takes
        // longer for them; the bound below follows the time it took).
        while start.elapsed() < Duration::from_millis(1500) || failures <= 20 {
            let mut fut = pool.submit(task!(square), 2);
            assert!(fut.result_timeout(LONG).is_err());
            failures += 1;
            thread::sleep(Duration::from_millis(20));
        }
        let elapsed = start.elapsed();
        let calls = fs::read_to_string(&log).unwrap_or_default().lines().count();
        assert!(failures > 20, "{failures} submits");
        // The first check, and one more after each backoff that ran out:
        // 1 s, then 2 s, 4 s, ... (two within 1.5 s).
        let (mut allowed, mut at, mut pause) = (1, Duration::ZERO, Duration::from_secs(1));
        while at + pause <= elapsed {
            allowed += 1;
            at += pause;
            pause *= 2;
        }
        assert!(
            (1..=allowed.max(2)).contains(&calls),
            "{calls} connections for {failures} submits in {elapsed:?}"
        );
    });
}

#[test]
fn killing_the_remote_worker_fails_the_task() {
    over_ssh(move |config| {
        let scratch = Scratch::new("kill-remote");
        let (pool, remote, running) = busy_worker(ssh(&config, &[("node1", 1)]), &scratch);
        send_signal(remote, libc::SIGKILL);
        let reason = assert_fails_naming(running, "node1");
        assert!(
            reason.contains(&format!("worker process {remote} on node1")),
            "{reason}"
        );
        assert_eq!(pool.submit(task!(square), 6).result_timeout(LONG), Ok(36));
    });
}

#[test]
fn kill_workers_ends_the_remote_processes() {
    over_ssh(move |config| {
        let scratch = Scratch::new("kill-workers");
        let (pool, remote, running) = busy_worker(ssh(&config, &[("node1", 1)]), &scratch);
        pool.kill_workers();
        assert!(failure(running).contains("node1"));
        assert_gone(remote);
    });
}

/// The error message of `fut`, which must fail within [`LONG`].
#[track_caller]
fn failure<T: std::fmt::Debug>(mut fut: concurrent_futures::Future<T>) -> String {
    fut.result_timeout(LONG)
        .expect_err("the task cannot succeed")
        .to_string()
}

/// The sshd of `node3`, run by this test.
struct Node3(Child);

impl Node3 {
    fn start() -> Node3 {
        let conf = cluster_dir().join("ssh/sshd-node3.conf");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-f"])
            .arg(&conf)
            .args(["-o", "PidFile=none"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd for node3");
        let config = ssh_config().expect("ssh config");
        let up = within(LONG, || {
            Command::new("ssh")
                .arg("-F")
                .arg(&config)
                .args(["node3", "true"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "sshd for node3 did not come up");
        Node3(child)
    }

    /// Stops the daemon and every connection it serves, as a machine that
    /// goes away would.
    fn stop(&mut self) {
        let listener = self.0.id();
        for session in children(listener, "sshd") {
            send_signal(session, libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Node3 {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn stopping_the_sshd_fails_the_task_and_ends_the_remote_worker() {
    over_ssh(move |config| {
        let mut node3 = Node3::start();
        let scratch = Scratch::new("stop-sshd");
        let (pool, remote, running) = busy_worker(ssh(&config, &[("node3", 1)]), &scratch);
        node3.stop();
        assert_host_lost(running, "node3");
        assert_gone(remote);
        // The host is gone: the next task fails naming it, without a hang.
        let err = failure(pool.submit(task!(square), 2));
        assert!(err.contains("node3"), "{err}");
    });
}

#[test]
fn a_missing_remote_program_is_named_with_its_host() {
    over_ssh(move |config| {
        let launcher = ssh(&config, &[("node1", 1)]).remote_program("/nonexistent/cf-worker");
        let pool = builder().launcher(launcher).build().expect("pool");
        let err = failure(pool.submit(task!(square), 2));
        assert!(
            err.contains("no worker program at /nonexistent/cf-worker on node1"),
            "{err}"
        );
    });
}

#[test]
fn a_worker_of_another_build_is_refused() {
    over_ssh(move |config| {
        // A "worker" that answers the handshake as another build would.
        let dir = Scratch::new("other-build");
        let fake = dir.path().join("worker");
        let mut hello = b"\x00CFWRK1\x00".to_vec();
        let identity = b"concurrent-futures 0.0.1 64-bit le";
        let mut body = vec![0x81u8];
        body.extend_from_slice(&4u32.to_le_bytes()); // this protocol version
        body.extend_from_slice(&4242u32.to_le_bytes());
        body.push(identity.len() as u8);
        body.extend_from_slice(identity);
        hello.extend_from_slice(&(body.len() as u32).to_le_bytes());
        hello.extend_from_slice(&body);
        fs::write(dir.path().join("hello"), &hello).expect("write the hello");
        write_script(
            &fake,
            &format!(
                "#!/bin/sh\ncat '{}'\nexec sleep 30\n",
                dir.path().join("hello").display()
            ),
        );
        let launcher = ssh(&config, &[("node1", 1)]).remote_program(fake.to_string_lossy());
        let pool = builder().launcher(launcher).build().expect("pool");
        let err = failure(pool.submit(task!(square), 2));
        assert!(err.contains("another build"), "{err}");
        assert!(err.contains("on node1"), "{err}");
    });
}

/// The cached programs under `dir`: (name, inode, modified).
fn cached(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        m.ino(),
                        m.modified().ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_program_is_shipped_once_and_atomically() {
    over_ssh(move |config| {
        let cache = fresh_cache("ship");
        let launcher =
            || ssh(&config, &[("node1", 2), ("node2", 2)]).cache_dir(cache.to_string_lossy());
        // Two pools ship at once, four connections in all.
        let pools: Vec<_> = (0..2)
            .map(|_| builder().launcher(launcher()).build().expect("pool"))
            .collect();
        let futs: Vec<_> = pools
            .iter()
            .flat_map(|p| {
                (0..8)
                    .map(|i| p.submit(task!(sleep_ms), 20 + i))
                    .collect::<Vec<_>>()
            })
            .collect();
        for mut f in futs {
            f.result_timeout(LONG).expect("the task");
        }
        drop(pools);
        let first = cached(&cache);
        assert_eq!(
            first.len(),
            1,
            "one complete copy, no temporary files: {first:?}"
        );
        assert!(first[0].0.starts_with("worker-"), "{first:?}");
        let exe = fs::metadata(std::env::current_exe().expect("exe"))
            .expect("exe size")
            .len();
        assert_eq!(
            fs::metadata(cache.join(&first[0].0)).expect("cached").len(),
            exe
        );
        // The next pool finds it and ships nothing.
        let pool = builder().launcher(launcher()).build().expect("pool");
        assert_eq!(pool.submit(task!(square), 4).result_timeout(LONG), Ok(16));
        assert_eq!(cached(&cache), first);
        let _ = fs::remove_dir_all(&cache);
    });
}

/// Run as a child process by `killed_pool_leaves_no_remote_worker`: a pool
/// over ssh with two busy workers; prints their pids, then waits.
#[test]
fn child_pool_over_ssh() {
    if std::env::var_os("CF_CHILD_POOL").is_none() {
        return;
    }
    let config = ssh_config().expect("ssh config");
    let pool = builder()
        .launcher(ssh(&config, &[("node1", 1), ("node2", 1)]))
        .build()
        .expect("pool");
    let scratch = Scratch::new("child-pool");
    let _busy: Vec<_> = (0..4)
        .map(|_| pool.submit(task!(gate), scratch.dir()))
        .collect();
    scratch.wait_started(2);
    // The gates mark `started-{pid}-{n}`: the workers' pids.
    let pids: Vec<String> = scratch
        .pids("started-")
        .iter()
        .map(u32::to_string)
        .collect();
    println!("PIDS {}", pids.join(" "));
    thread::sleep(LONG);
}

#[test]
fn killed_pool_leaves_no_remote_worker() {
    over_ssh(|_config| {
        let mut child = ChildRun::start(
            &test_path(module_path!(), "child_pool_over_ssh"),
            &[("CF_CHILD_POOL", "1")],
        );
        let pids = parse_pids(&child.line_after("PIDS"));
        assert_eq!(pids.len(), 2, "two workers, one on each host");
        assert!(pids.iter().all(|&p| alive(p)));
        send_signal(child.child.id(), libc::SIGKILL);
        child.wait_exit();
        for p in pids {
            assert_gone(p);
        }
    });
}

// ---------------------------------------------------------------------------
// Slurm: job steps of the allocation the tests run in.

/// The numbered steps of this allocation ("12.0", "12.1").
fn steps() -> Vec<String> {
    let job = std::env::var("SLURM_JOB_ID").expect("inside an allocation");
    let out = Command::new("timeout")
        .args(["10", "squeue", "-h", "-s", "-j", &job, "-o", "%i"])
        .output()
        .expect("squeue");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|s| {
            s.rsplit('.')
                .next()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn a_cancelled_step_fails_its_task() {
    over_slurm(move || {
        let scratch = Scratch::new("scancel");
        let (pool, remote, running) =
            busy_worker(concurrent_futures::launch::Slurm::new(), &scratch);
        let steps = steps();
        assert_eq!(steps.len(), 1, "{steps:?}");
        let status = Command::new("timeout")
            .args(["10", "scancel", &steps[0]])
            .status();
        assert!(status.is_ok_and(|s| s.success()));
        // The step ran the node's agent: the link to the node is lost.
        assert_host_lost(running, &slurm_node());
        assert_gone(remote);
        assert_eq!(pool.submit(task!(square), 7).result_timeout(LONG), Ok(49));
    });
}

/// Run as a child process by `killed_pool_leaves_no_slurm_step`.
#[test]
fn child_pool_over_slurm() {
    if std::env::var_os("CF_CHILD_SLURM").is_none() {
        return;
    }
    let pool = builder()
        .launcher(concurrent_futures::launch::Slurm::new())
        .max_workers(1)
        .build()
        .expect("pool");
    let scratch = Scratch::new("child-slurm");
    let _busy = pool.submit(task!(gate), scratch.dir());
    scratch.wait_started(1);
    let pid = scratch.pids("started-")[0];
    println!("PIDS {pid}");
    thread::sleep(LONG);
}

#[test]
fn killed_pool_leaves_no_slurm_step() {
    over_slurm(|| {
        let mut child = ChildRun::start(
            &test_path(module_path!(), "child_pool_over_slurm"),
            &[("CF_CHILD_SLURM", "1")],
        );
        let pids = parse_pids(&child.line_after("PIDS"));
        assert_eq!(pids.len(), 1);
        send_signal(child.child.id(), libc::SIGKILL);
        child.wait_exit();
        assert_gone(pids[0]);
        assert!(
            within(Duration::from_secs(5), || steps().is_empty()),
            "{:?}",
            steps()
        );
    });
}
