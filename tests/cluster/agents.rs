//! One agent per host, against the loopback sshds at OpenSSH's stock
//! settings (`MaxStartups 10:30:100`, `MaxSessions 10`) and the one-node
//! Slurm: a host's slots cost one connection, workers killed there are
//! replaced through it, and a lost link fails what ran there with
//! `HostLost`.

use std::collections::HashSet;

use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::launch::Slurm;
use concurrent_futures::{task, Error};

use crate::cluster_common::{
    assert_host_lost, busy_worker, one_slurm_worker, over_slurm, over_ssh, parent_of, ssh,
    ssh_clients,
};
use crate::process_common::{
    alive, builder, eventually, gate, parse_pids, pid, send_signal, sleep_ms, square, test_path,
    within, ChildRun, Scratch, LONG,
};

/// The number of threads of process `pid` (`Threads:` in its status).
fn threads_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(usize::MAX)
}

/// The CPU time this process has used, user and system, in clock ticks
/// (fields 14 and 15 of /proc/self/stat).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (the state) is the first after the name.
    let tick = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok());
    tick(14).unwrap_or(0) + tick(15).unwrap_or(0)
}

/// Sleeps `ms`, then says which process ran it.
fn nap_pid(ms: u64) -> u32 {
    thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

#[test]
fn sixty_four_slots_on_one_host_take_one_connection_on_a_stock_sshd() {
    over_ssh(|config| {
        let pool = builder()
            .launcher(ssh(&config, &[("wide1", 64)]))
            .build()
            .expect("pool");
        assert_eq!(pool.max_workers(), 64);
        // Each task holds its worker long enough that all 64 must run at
        // once: 64 distinct processes.
        let futs: Vec<_> = (0..64).map(|_| pool.submit(task!(nap_pid), 1500)).collect();
        let pids: HashSet<u32> = futs
            .into_iter()
            .map(|mut f| f.result_timeout(LONG * 3).expect("a pid"))
            .collect();
        assert_eq!(pids.len(), 64, "{pids:?}");
        assert_eq!(ssh_clients("wide1").len(), 1);
        // One agent is every worker's parent.
        let parents: HashSet<Option<u32>> = pids.iter().map(|p| parent_of(*p)).collect();
        assert_eq!(parents.len(), 1, "{parents:?}");
        let listed: HashSet<u32> = pool.worker_pids().into_iter().collect();
        assert_eq!(listed, pids);
        assert_eq!(pool.stats().hosts[0].workers, 64);
    });
}

#[test]
fn two_hosts_of_sixteen_take_two_connections() {
    over_ssh(|config| {
        let pool = builder()
            .launcher(ssh(&config, &[("lost2", 16), ("wide2", 16)]))
            .build()
            .expect("pool");
        let futs: Vec<_> = (0..32).map(|_| pool.submit(task!(nap_pid), 1500)).collect();
        let pids: HashSet<u32> = futs
            .into_iter()
            .map(|mut f| f.result_timeout(LONG * 3).expect("a pid"))
            .collect();
        assert_eq!(pids.len(), 32);
        assert_eq!(ssh_clients("lost2").len(), 1);
        assert_eq!(ssh_clients("wide2").len(), 1);
        let per_host: Vec<usize> = pool.stats().hosts.iter().map(|h| h.workers).collect();
        assert_eq!(per_host, [16, 16]);
    });
}

#[test]
fn a_hundred_and_twenty_eight_workers_on_two_hosts_take_two_connections() {
    over_ssh(|config| {
        let scratch = Scratch::new("agents-128");
        let pool = builder()
            .launcher(ssh(&config, &[("many1", 64), ("many2", 64)]))
            .build()
            .expect("pool");
        assert_eq!(pool.max_workers(), 128);
        // Each task holds its worker until all 128 run at once.
        let futs: Vec<_> = (0..128)
            .map(|_| pool.submit(task!(gate), scratch.dir()))
            .collect();
        scratch.wait_started(128);
        assert_eq!(ssh_clients("many1").len(), 1);
        assert_eq!(ssh_clients("many2").len(), 1);
        let per_host: Vec<usize> = pool.stats().hosts.iter().map(|h| h.workers).collect();
        assert_eq!(per_host, [64, 64]);
        scratch.open();
        let pids: HashSet<u32> = futs
            .into_iter()
            .map(|mut f| f.result_timeout(LONG).expect("a pid"))
            .collect();
        assert_eq!(pids.len(), 128);
        // Two agents, each the parent of its host's 64.
        let parents: HashSet<Option<u32>> = pids.iter().map(|p| parent_of(*p)).collect();
        assert_eq!(parents.len(), 2, "{parents:?}");
    });
}

#[test]
fn a_killed_remote_worker_is_replaced_through_the_same_connection() {
    over_ssh(|config| {
        let scratch = Scratch::new("agent-kill-worker");
        let pool = builder()
            .launcher(ssh(&config, &[("killed1", 2)]))
            .max_workers(2)
            .restart_workers(true)
            .build()
            .expect("pool");
        let remote = pool
            .submit(task!(pid), ())
            .result_timeout(LONG)
            .expect("pid");
        let agent = parent_of(remote).expect("the agent");
        let client = ssh_clients("killed1");
        assert_eq!(client.len(), 1);
        let mut running = pool.submit(task!(gate), scratch.dir());
        scratch.wait_started(1);
        let gated = scratch.pids("started-")[0];
        send_signal(gated, libc::SIGKILL);
        let err = running.result_timeout(LONG).expect_err("killed");
        let Error::WorkerDied(reason) = &err else {
            panic!("{err:?}")
        };
        assert!(
            reason.contains(&format!(
                "worker process {gated} on killed1 was killed by signal SIGKILL (9)"
            )),
            "{reason}"
        );
        // The replacement comes through the same agent and connection.
        let pids: HashSet<u32> = (0..6)
            .map(|_| pool.submit(task!(sleep_ms), 200))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|mut f| f.result_timeout(LONG).expect("a pid"))
            .collect();
        assert!(!pids.contains(&gated));
        assert!(
            pids.iter().all(|p| parent_of(*p) == Some(agent)),
            "{pids:?}"
        );
        assert_eq!(ssh_clients("killed1"), client);
    });
}

#[test]
fn killing_the_agent_fails_what_ran_there_with_host_lost_and_the_pool_reconnects() {
    over_ssh(|config| {
        let scratch = Scratch::new("agent-kill-agent");
        let pool = builder()
            .launcher(ssh(&config, &[("lost1", 2)]))
            .max_workers(2)
            .restart_workers(true)
            .build()
            .expect("pool");
        let running: Vec<_> = (0..2)
            .map(|_| pool.submit(task!(gate), scratch.dir()))
            .collect();
        scratch.wait_started(2);
        let workers = scratch.pids("started-");
        let agent = parent_of(workers[0]).expect("the agent");
        assert_eq!(parent_of(workers[1]), Some(agent));
        send_signal(agent, libc::SIGKILL);
        for mut fut in running {
            match fut.result_timeout(LONG) {
                Err(Error::HostLost(why)) => assert!(why.contains("lost1"), "{why}"),
                other => panic!("expected HostLost, got {other:?}"),
            }
        }
        // Its workers do not outlive it.
        for w in &workers {
            eventually("the agent's workers exit", || !alive(*w));
        }
        // A new link, a new agent.
        let next = pool
            .submit(task!(pid), ())
            .result_timeout(LONG)
            .expect("pid");
        let again = parent_of(next).expect("an agent");
        assert_ne!(again, agent);
        assert_eq!(ssh_clients("lost1").len(), 1);
    });
}

#[test]
fn killing_the_ssh_client_is_host_lost_and_the_agent_takes_its_workers_down() {
    over_ssh(|config| {
        let scratch = Scratch::new("agent-kill-client");
        let (pool, worker, running) = busy_worker(ssh(&config, &[("lost3", 1)]), &scratch);
        let agent = parent_of(worker).expect("the agent");
        let clients = ssh_clients("lost3");
        assert_eq!(clients.len(), 1);
        send_signal(clients[0], libc::SIGKILL);
        assert_host_lost(running, "lost3");
        eventually("the agent exits", || !alive(agent));
        eventually("its worker exits", || !alive(worker));
        assert_eq!(pool.submit(task!(square), 5).result_timeout(LONG), Ok(25));
    });
}

/// Run as a child process by the test below: a pool of 4 workers on node1
/// and 4 on node2; prints their pids and its own thread count, then waits
/// to be killed.
#[test]
fn child_pool_to_be_killed() {
    if std::env::var_os("CF_CHILD_KILLED").is_none() {
        return;
    }
    let config = crate::cluster_common::ssh_config().expect("ssh config");
    let pool = builder()
        .launcher(ssh(&config, &[("node1", 4), ("node2", 4)]))
        .build()
        .expect("pool");
    let futs: Vec<_> = (0..8).map(|_| pool.submit(task!(nap_pid), 1000)).collect();
    let pids: Vec<String> = futs
        .into_iter()
        .map(|mut f| f.result_timeout(LONG).expect("pid").to_string())
        .collect();
    println!("PIDS {}", pids.join(" "));
    println!("THREADS {}", threads_of(std::process::id()));
    // Every worker idle: what the pool's threads burn in a second.
    let before = cpu_ticks();
    thread::sleep(Duration::from_secs(1));
    println!("IDLE_TICKS {}", cpu_ticks() - before);
    thread::sleep(LONG * 6);
}

#[test]
fn a_link_costs_three_threads_whatever_its_workers_and_no_cpu_when_idle() {
    over_ssh(|_config| {
        let child = ChildRun::start(
            &test_path(module_path!(), "child_pool_to_be_killed"),
            &[("CF_CHILD_KILLED", "1")],
        );
        assert_eq!(parse_pids(&child.line_after("PIDS ")).len(), 8);
        // A link costs three threads whatever its workers (its reader, its
        // driver, the agent's stderr); two serve the whole process (the
        // keepalive of every link, and the one that starts ssh clients).
        // With the test harness's own two: 2 + 2 x 3 + 2 (a writer, reader
        // and stderr thread per worker would be 24 more).
        let threads: usize = child.line_after("THREADS ").parse().expect("a count");
        assert!(threads <= 10, "{threads} threads for 2 links of 4 workers");
        // Idle, the drivers wait for their bells: a second of it costs
        // (far) less than a tenth of a second of CPU. A driver that polled
        // in a loop would burn the whole second.
        let ticks: u64 = child.line_after("IDLE_TICKS ").parse().expect("ticks");
        assert!(ticks < 10, "{ticks} ticks of CPU in an idle second");
    });
}

#[test]
fn a_killed_pool_leaves_no_agent_and_no_remote_worker_after_two_seconds() {
    over_ssh(|_config| {
        let child = ChildRun::start(
            &test_path(module_path!(), "child_pool_to_be_killed"),
            &[("CF_CHILD_KILLED", "1")],
        );
        let workers = parse_pids(&child.line_after("PIDS "));
        assert_eq!(workers.len(), 8);
        // A link costs three threads whatever its workers (its reader, its
        // driver, the agent's stderr); two serve the whole process (the
        // keepalive of every link, and the one that starts ssh clients).
        // With the test harness's own two: 2 + 2 x 3 + 2 (a writer, reader
        // and stderr thread per worker would be 24 more).
        let threads: usize = child
            .line_after("THREADS ")
            .trim()
            .parse()
            .expect("a count");
        assert!(threads <= 10, "{threads} threads for 2 links of 4 workers");
        let agents: HashSet<u32> = workers.iter().filter_map(|w| parent_of(*w)).collect();
        assert_eq!(agents.len(), 2, "{agents:?}");
        let pid = child.child.id();
        send_signal(pid, libc::SIGKILL);
        let gone = within(Duration::from_secs(2), || {
            workers.iter().chain(&agents).all(|p| !alive(*p))
        });
        let left: Vec<u32> = workers
            .iter()
            .chain(&agents)
            .copied()
            .filter(|p| alive(*p))
            .collect();
        assert!(gone, "still alive 2 s after the pool was killed: {left:?}");
        drop(child);
    });
}

#[test]
fn salloc_of_sixteen_runs_one_step_per_node() {
    over_slurm(|| {
        let tasks: usize = std::env::var("SLURM_NTASKS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let pool = builder().launcher(Slurm::new()).build().expect("pool");
        assert_eq!(pool.max_workers(), tasks);
        let start = Instant::now();
        let futs: Vec<_> = (0..tasks)
            .map(|_| pool.submit(task!(nap_pid), 1000))
            .collect();
        let pids: HashSet<u32> = futs
            .into_iter()
            .map(|mut f| f.result_timeout(LONG * 3).expect("a pid"))
            .collect();
        assert_eq!(pids.len(), tasks);
        assert!(start.elapsed() < LONG * 3);
        // One step (besides the allocation's own), named for its node.
        let job = std::env::var("SLURM_JOB_ID").expect("inside an allocation");
        let out = std::process::Command::new("squeue")
            .args(["-h", "-s", "-j", &job, "-o", "%j"])
            .output()
            .expect("squeue");
        let steps: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("concurrent-futures-agent"))
            .map(str::to_string)
            .collect();
        assert_eq!(steps.len(), 1, "{steps:?}");
        let parents: HashSet<Option<u32>> = pids.iter().map(|p| parent_of(*p)).collect();
        assert_eq!(parents.len(), 1);
    });
}

#[test]
fn a_slurm_launcher_dropped_with_its_pool_ends_its_step_at_once() {
    over_slurm(|| {
        let (pool, worker) = one_slurm_worker();
        let agent = parent_of(worker).expect("the node's agent");
        // Nobody else holds the launcher: dropping the pool closes the link
        // now. An idle link that its launcher may still use lingers 1 s for
        // the next worker (a link that kept its launcher alive did so here).
        let dropped = Instant::now();
        drop(pool);
        assert!(
            within(Duration::from_millis(500), || !alive(agent)),
            "the agent still ran {:?} after its launcher was dropped",
            dropped.elapsed()
        );
    });
}

/// The first try marks `{dir}/tried` and blocks until `{dir}/open` exists
/// (its host is lost meanwhile); a later try returns at once. Returns the
/// pid of the try that finished.
fn first_try_blocks(dir: String) -> u32 {
    let tried = std::path::Path::new(&dir).join("tried");
    if !tried.exists() {
        std::fs::write(&tried, std::process::id().to_string()).expect("mark the try");
        let open = std::path::Path::new(&dir).join("open");
        while !open.exists() && std::path::Path::new(&dir).exists() {
            thread::sleep(Duration::from_millis(2));
        }
    }
    std::process::id()
}

#[test]
fn a_task_with_a_retry_runs_again_when_its_host_is_lost() {
    over_ssh(|config| {
        let scratch = Scratch::new("agent-retry");
        // The default policy: a lost host would break the pool, but the
        // task's retry runs it again through a new link.
        let pool = builder()
            .launcher(ssh(&config, &[("retry1", 1)]))
            .build()
            .expect("pool");
        let mut fut = pool.submit(task!(first_try_blocks).retries(1), scratch.dir());
        let tried = scratch.path().join("tried");
        eventually("the first try started", || tried.exists());
        let first: u32 = std::fs::read_to_string(&tried)
            .expect("the first try's pid")
            .parse()
            .expect("a pid");
        let agent = parent_of(first).expect("the agent");
        send_signal(agent, libc::SIGKILL);
        let second = fut.result_timeout(LONG).expect("the retry finished");
        assert_ne!(second, first);
        assert_ne!(parent_of(second), Some(agent));
        assert_eq!(pool.stats().retries, 1);
    });
}
