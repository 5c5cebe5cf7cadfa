//! How [`Slurm`] runs workers inside an allocation: one job step per
//! node, running a host agent that starts the node's share of the
//! allocation's tasks. The nodes and their shares come from the
//! allocation's environment (`SLURM_JOB_NODELIST`, expanded by
//! `scontrol show hostnames`, and `SLURM_TASKS_PER_NODE`).

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::super::client::spawn_client;
use super::super::local::current_executable;
use super::super::{Spawned, WorkerSpec};
use super::{QuickAcks, Slurm, Step};
use crate::agent::{agent_env, AgentLink, HostLinks, LinkOptions};
use crate::launch::backoff::Backoff;
use crate::Error;

/// How often an idle step's link is pinged.
const KEEPALIVE: Duration = Duration::from_secs(10);
/// How long the agent may take to answer once its step runs.
const HANDSHAKE: Duration = Duration::from_secs(60);
/// How long a node whose step failed is passed over: 1 s, doubling to 60 s.
const NODE_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
/// How long a node's step stays without workers before it ends.
const LINGER: Duration = Duration::from_secs(1);
/// The most bytes of a worker's output in one frame over srun. Where the
/// pool cannot set `TCP_NODELAY` and `TCP_QUICKACK` on srun's I/O
/// connection (`quick_acks.rs`), Slurm's forwarding holds the second
/// message of a burst for the delayed-ACK timer (40 ms), and frames this
/// small made `map` over srun 1.1M to 13.4M items/s in its luckier runs.
/// Where it can, this size and 64 KiB measured the same
/// (`docs/performance.md`, "srun's acknowledgements").
const SRUN_CHUNK: usize = 2000;

/// The allocation's nodes as the launcher learns them at its first
/// launch, and their links; shared by the launcher's clones.
#[derive(Default)]
pub(crate) struct Nodes {
    table: Mutex<Option<Result<Vec<Node>, Error>>>,
    links: HostLinks,
}

impl fmt::Debug for Nodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nodes").finish_non_exhaustive()
    }
}

/// One node of the allocation.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    /// Its share of the allocation's tasks: workers it runs at most.
    slots: usize,
    /// Its CPUs in the allocation, for its step.
    cpus: usize,
    /// Workers running there.
    live: usize,
    /// Its steps lost or refused in a row, and until when it is passed
    /// over for nodes that work (it is still used when none does).
    failures: u32,
    down_until: Option<Instant>,
}

impl Slurm {
    /// Starts a worker on the allocation node with the most free slots,
    /// through that node's step, starting the step if need be.
    pub(super) fn launch_on_node(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
        let (i, node) = self
            .nodes
            .choose(|| read_allocation(&self.srun_program_for_scontrol()))?;
        let env: Vec<(Vec<u8>, Vec<u8>)> = spec
            .env()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        let args: Vec<Vec<u8>> = spec.args().map(|a| a.as_bytes().to_vec()).collect();
        let nodes = Arc::clone(&self.nodes);
        self.nodes.links.start(
            i,
            || {
                let opened = self.open_step(i, &node, spec);
                self.nodes.record(i, opened.is_ok());
                opened
            },
            &args,
            &env,
            Box::new(move || nodes.release(i)),
        )
    }

    /// The `scontrol` next to the chosen `srun` if there is one there,
    /// else from `PATH`.
    fn srun_program_for_scontrol(&self) -> std::ffi::OsString {
        let srun = std::path::Path::new(&self.srun);
        match srun.parent().map(|dir| dir.join("scontrol")) {
            Some(next_to) if next_to.is_file() => next_to.into_os_string(),
            _ => "scontrol".into(),
        }
    }

    /// Starts node's step, running its agent, and opens its link.
    fn open_step(&self, i: usize, node: &Node, spec: &WorkerSpec) -> Result<AgentLink, Error> {
        let cmd = self.step_command(node, spec)?;
        let child = spawn_client(cmd).map_err(|e| {
            Error::Io(format!(
                "cannot start {} for node {}: {e}",
                self.srun.to_string_lossy(),
                node.name
            ))
        })?;
        let pid = child.id();
        let mut spawned = Spawned::from_child(child, Some(node.name.clone()))?;
        spawned.process = Box::new(Step(spawned.process));
        spawned.stdout = Box::new(QuickAcks::new(pid, spawned.stdout));
        let options = LinkOptions {
            ping: KEEPALIVE,
            handshake: HANDSHAKE,
            linger: LINGER,
        };
        // A step lost after its agent answered (cancelled, its node set
        // DOWN) has the node passed over for a while. Weak: the nodes hold
        // their links, so a strong reference from a link would keep both
        // alive once the launcher is gone, and its step would last until
        // the link's linger instead of closing with the launcher.
        let nodes = Arc::downgrade(&self.nodes);
        let on_lost = Box::new(move || {
            if let Some(nodes) = nodes.upgrade() {
                nodes.record(i, false);
            }
        });
        AgentLink::open(spawned, node.name.clone(), options, on_lost, &|| true)
    }

    /// `srun` for node's step: one task on that node with the node's
    /// CPUs, running the agent.
    fn step_command(&self, node: &Node, spec: &WorkerSpec) -> Result<Command, Error> {
        let program = match &self.program {
            Some(p) => p.clone(),
            // Not /proc/self/exe: on a node that names slurmstepd's task.
            None => current_executable()?,
        };
        let mut cmd = Command::new(&self.srun);
        // `--overlap`: the step takes the node's CPUs without waiting for
        // another step that holds them (another pool in the same
        // allocation, or this pool's previous step still being torn
        // down), which would hold `submit` until it ends.
        cmd.args([
            "--unbuffered",
            "--nodes=1",
            "--ntasks=1",
            "--quiet",
            "--exact",
            "--overlap",
        ])
        .arg(format!("--nodelist={}", node.name))
        .arg(format!("--cpus-per-task={}", node.cpus.max(1)))
        .arg(format!("--job-name=concurrent-futures-agent-{}", node.name))
        .args(&self.srun_args)
        .arg("--")
        .arg(program)
        .args(spec.args());
        for (k, v) in spec.env() {
            if k != crate::process::WORKER_ENV {
                cmd.env(k, v);
            }
        }
        cmd.envs(agent_env(node.slots, KEEPALIVE, SRUN_CHUNK));
        Ok(cmd)
    }
}

impl Nodes {
    /// Picks the node with the most free slots and counts a worker there;
    /// reads the allocation with `read` the first time.
    fn choose(
        &self,
        read: impl FnOnce() -> Result<Vec<Node>, Error>,
    ) -> Result<(usize, Node), Error> {
        let mut table = self.table.lock();
        if !matches!(*table, Some(Ok(_))) {
            // Read again after a failure: scontrol may have been busy.
            *table = Some(read());
        }
        let nodes = match table.as_mut() {
            Some(Ok(nodes)) => nodes,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(Error::Io("the allocation was not read".to_string())),
        };
        // A node that failed lately only when no other has a free slot;
        // then the one whose pause ends first.
        let now = Instant::now();
        let best = nodes
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| n.live < n.slots)
            .max_by_key(|(_, n)| {
                let down = n.down_until.filter(|t| *t > now);
                (
                    down.is_none(),
                    std::cmp::Reverse(down),
                    n.slots - n.live,
                    std::cmp::Reverse(n.live),
                )
            });
        match best {
            Some((i, node)) => {
                node.live += 1;
                Ok((i, node.clone()))
            }
            None => Err(Error::Io(format!(
                "every node of the allocation runs as many workers as it has tasks ({})",
                nodes
                    .iter()
                    .map(|n| format!("{}: {}", n.name, n.slots))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Records how node `i`'s step fared: opened (`true`), or refused or
    /// lost (`false`: passed over for 1 s, doubling to 60 s).
    fn record(&self, i: usize, worked: bool) {
        if let Some(Ok(nodes)) = self.table.lock().as_mut() {
            if let Some(n) = nodes.get_mut(i) {
                if worked {
                    n.failures = 0;
                    n.down_until = None;
                } else {
                    n.failures = n.failures.saturating_add(1);
                    n.down_until = Some(Instant::now() + NODE_BACKOFF.after(n.failures));
                }
            }
        }
    }

    /// A worker on node `i` is gone.
    fn release(&self, i: usize) {
        if let Some(Ok(nodes)) = self.table.lock().as_mut() {
            if let Some(n) = nodes.get_mut(i) {
                n.live = n.live.saturating_sub(1);
            }
        }
    }
}

/// The allocation's nodes, tasks and CPUs, from its environment.
fn read_allocation(scontrol: &std::ffi::OsStr) -> Result<Vec<Node>, Error> {
    let var = |name: &str| {
        std::env::var(name).map_err(|_| {
            Error::Io(format!(
                "{name} is not set: the Slurm launcher runs one step per node only inside an allocation"
            ))
        })
    };
    let list = var("SLURM_JOB_NODELIST").or_else(|_| var("SLURM_NODELIST"))?;
    let tasks = parse_counts(&var("SLURM_TASKS_PER_NODE")?)?;
    let cpus = match std::env::var("SLURM_JOB_CPUS_PER_NODE") {
        Ok(c) => parse_counts(&c)?,
        Err(_) => tasks.clone(),
    };
    let out = Command::new(scontrol)
        .args(["show", "hostnames", &list])
        .output()
        .map_err(|e| {
            Error::Io(format!(
                "cannot run {} to list the allocation's nodes: {e}",
                scontrol.to_string_lossy()
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Io(format!(
            "scontrol show hostnames {list} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if names.len() != tasks.len() {
        return Err(Error::Io(format!(
            "the allocation lists {} nodes ({list}) but tasks for {} (SLURM_TASKS_PER_NODE)",
            names.len(),
            tasks.len()
        )));
    }
    Ok(names
        .into_iter()
        .zip(tasks)
        .enumerate()
        .map(|(i, (name, slots))| Node {
            name,
            slots,
            cpus: cpus.get(i).copied().unwrap_or(slots),
            live: 0,
            failures: 0,
            down_until: None,
        })
        .filter(|n| n.slots > 0)
        .collect())
}

/// Expands Slurm's per-node counts: `"2(x3),1"` is `[2, 2, 2, 1]`.
fn parse_counts(s: &str) -> Result<Vec<usize>, Error> {
    let bad = || Error::Io(format!("cannot read the per-node counts {s:?}"));
    let mut out = Vec::new();
    for part in s.split(',') {
        let (count, times) = match part.split_once("(x") {
            Some((c, rest)) => (c, rest.strip_suffix(')').ok_or_else(bad)?),
            None => (part, "1"),
        };
        let count: usize = count.trim().parse().map_err(|_| bad())?;
        let times: usize = times.trim().parse().map_err(|_| bad())?;
        if times > 1 << 20 {
            return Err(bad());
        }
        out.extend(std::iter::repeat(count).take(times));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_node_counts_expand() {
        assert_eq!(parse_counts("2(x3),1").unwrap(), [2, 2, 2, 1]);
        assert_eq!(parse_counts("16").unwrap(), [16]);
        assert!(parse_counts("2(x3").is_err());
        assert!(parse_counts("x").is_err());
    }

    fn node(name: &str, slots: usize) -> Node {
        Node {
            name: name.into(),
            slots,
            cpus: slots,
            live: 0,
            failures: 0,
            down_until: None,
        }
    }

    #[test]
    fn the_node_with_most_free_slots_is_chosen() {
        let nodes = Nodes::default();
        let table = || Ok(vec![node("a", 1), node("b", 2)]);
        let picks: Vec<String> = (0..3)
            .map(|_| nodes.choose(table).unwrap().1.name)
            .collect();
        assert_eq!(picks, ["b", "a", "b"]);
        assert!(matches!(nodes.choose(table), Err(Error::Io(m)) if m.contains("a: 1, b: 2")));
        nodes.release(0);
        assert_eq!(nodes.choose(table).unwrap().1.name, "a");
    }

    #[test]
    fn a_node_whose_step_failed_is_passed_over_while_another_has_room() {
        let nodes = Nodes::default();
        let table = || Ok(vec![node("a", 4), node("b", 2)]);
        assert_eq!(nodes.choose(table).unwrap().1.name, "a");
        nodes.release(0);
        // a's step was lost: b takes the next workers though a has more
        // free slots, and a only when b is full.
        nodes.record(0, false);
        let picks: Vec<String> = (0..3)
            .map(|_| nodes.choose(table).unwrap().1.name)
            .collect();
        assert_eq!(picks, ["b", "b", "a"]);
        // A step that opens there again clears it.
        nodes.record(0, true);
        nodes.release(1);
        assert_eq!(nodes.choose(table).unwrap().1.name, "a");
    }
}
