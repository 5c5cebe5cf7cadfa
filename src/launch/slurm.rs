//! [`Slurm`]: workers as Slurm job steps (or jobs), through `srun`.

use std::ffi::OsString;
use std::io;
use std::process::{Command, ExitStatus};
use std::sync::Arc;

use self::quick_acks::QuickAcks;
use super::client::spawn_client;
use super::local::current_executable;
use super::{Launcher, Spawned, WorkerProcess, WorkerSpec};
use crate::Error;

/// Runs workers with the system's `srun`: inside an allocation (`salloc`,
/// `sbatch`) one job step per node, outside one a job per worker.
///
/// Inside an allocation each node gets one step (`--nodes=1 --ntasks=1
/// --exact --nodelist=<node>`, the node's CPUs, named
/// `concurrent-futures-agent-<node>`), which runs a host agent (this
/// executable again, served by [`init`](crate::init)); the agent starts
/// the node's share of the allocation's tasks (`SLURM_TASKS_PER_NODE`) and
/// relays their frames over the step's stdin and stdout. The nodes come
/// from `scontrol show hostnames $SLURM_JOB_NODELIST`.
///
/// The bytes travel through `srun`, which runs with
/// `--unbuffered` (without it Slurm forwards a step's output line by line,
/// and a binary frame without a newline would stall) and `--ntasks=1`;
/// inside an allocation also with `--exact`, so that steps run side by side
/// on the allocation's CPUs. Workers default to `SLURM_NTASKS`. The
/// environment the pool gives its workers travels with `srun`'s own
/// (`--export=ALL`, Slurm's default).
///
/// Slurm forwards a step's I/O over a TCP connection between `srun` and
/// `slurmstepd`, in messages of at most 1 KB and without `TCP_NODELAY`, so
/// the second message of a burst would wait 40 ms for a delayed
/// acknowledgement. On Linux the pool sets `TCP_NODELAY` on `srun`'s end
/// of that connection and has it acknowledge at once what it receives,
/// through a duplicate of `srun`'s socket (`pidfd_getfd`: `srun` is the
/// pool's child; no byte goes through the duplicate). Where the system
/// does not allow that (a ptrace policy, a seccomp filter, a kernel before
/// 5.6), the I/O works as it did, with those waits, and an `info` event
/// says so.
///
/// The program is this executable, at the same path on the nodes (a shared
/// filesystem, as clusters usually have), or [`program`](Slurm::program).
///
/// When `srun` ends (killed by the pool, or the pool itself killed),
/// Slurm ends the step. A step cancelled with `scancel`, or on a node set
/// DOWN, fails the tasks that ran there with
/// [`Error::HostLost`](crate::Error::HostLost).
///
/// # Examples
///
/// ```
/// use concurrent_futures::launch::Slurm;
/// use concurrent_futures::ProcessPoolExecutor;
///
/// let slurm = Slurm::new().srun_args(["--partition=debug", "--time=10"]);
/// let pool = ProcessPoolExecutor::builder().launcher(slurm).max_workers(4).build()?;
/// assert_eq!(pool.max_workers(), 4); // nothing is submitted to Slurm yet
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Slurm {
    srun: OsString,
    srun_args: Vec<OsString>,
    program: Option<OsString>,
    /// `Some(false)`: a job per worker even inside an allocation.
    steps: Option<bool>,
    /// Inside an allocation: its nodes and their steps.
    nodes: Arc<nodes::Nodes>,
}

mod nodes;
mod quick_acks;

impl Slurm {
    /// Job steps inside an allocation (when `SLURM_JOB_ID` is set), jobs
    /// outside one.
    pub fn new() -> Self {
        Slurm {
            srun: OsString::from("srun"),
            srun_args: Vec::new(),
            program: None,
            steps: None,
            nodes: Arc::default(),
        }
    }

    /// Arguments for `srun`, before the program: partition, time,
    /// account, constraints, `--cpus-per-task`, ...
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Slurm;
    /// let slurm = Slurm::new().srun_args(["--cpus-per-task=4", "--mem=8G"]);
    /// # let _ = slurm;
    /// ```
    #[must_use]
    pub fn srun_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.srun_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The `srun` to run (default: `srun` from `PATH`).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Slurm;
    /// let slurm = Slurm::new().srun_program("/opt/slurm/bin/srun");
    /// # let _ = slurm;
    /// ```
    #[must_use]
    pub fn srun_program(mut self, srun: impl Into<OsString>) -> Self {
        self.srun = srun.into();
        self
    }

    /// Runs `program` (a path valid on the nodes) instead of this
    /// executable. Its `main` must call [`init`](crate::init) first.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Slurm;
    /// let slurm = Slurm::new().program("/shared/bin/my-worker");
    /// # let _ = slurm;
    /// ```
    #[must_use]
    pub fn program(mut self, program: impl Into<OsString>) -> Self {
        self.program = Some(program.into());
        self
    }

    /// Each worker a job of its own (`true` is the default outside an
    /// allocation) or a step of the current allocation (the default
    /// inside one).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Slurm;
    /// // Inside an sbatch script, still submit each worker as its own job:
    /// let slurm = Slurm::new().own_jobs(true).srun_args(["--time=30"]);
    /// # let _ = slurm;
    /// ```
    #[must_use]
    pub fn own_jobs(mut self, yes: bool) -> Self {
        self.steps = Some(!yes);
        self
    }

    /// Whether workers are steps of the current allocation.
    fn as_steps(&self) -> bool {
        self.steps
            .unwrap_or_else(|| std::env::var_os("SLURM_JOB_ID").is_some())
    }

    /// The `srun` command for one worker.
    fn command(&self, spec: &WorkerSpec) -> Result<Command, Error> {
        let program = match &self.program {
            Some(p) => p.clone(),
            // Not /proc/self/exe: on a node that names slurmstepd's task.
            None => current_executable()?,
        };
        let mut cmd = Command::new(&self.srun);
        cmd.args(["--unbuffered", "--ntasks=1", "--nodes=1", "--quiet"]);
        if self.as_steps() {
            cmd.arg("--exact");
        } else {
            // A job of its own: whatever the pool inherited from an
            // allocation must not make srun think it is a step.
            for var in [
                "SLURM_JOB_ID",
                "SLURM_JOBID",
                "SLURM_NTASKS",
                "SLURM_NPROCS",
                "SLURM_NNODES",
                "SLURM_NODELIST",
                "SLURM_JOB_NODELIST",
            ] {
                cmd.env_remove(var);
            }
        }
        cmd.args(&self.srun_args)
            .arg("--")
            .arg(program)
            .args(spec.args())
            .envs(spec.env());
        Ok(cmd)
    }
}

impl Default for Slurm {
    fn default() -> Self {
        Self::new()
    }
}

impl Launcher for Slurm {
    fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
        if self.as_steps() {
            return self.launch_on_node(spec);
        }
        let label = match std::env::var("SLURM_JOB_ID") {
            Ok(job) if self.as_steps() => format!("slurm job {job}"),
            _ => "slurm".to_string(),
        };
        let child = spawn_client(self.command(spec)?).map_err(|e| {
            Error::Io(format!(
                "cannot start {} for a worker: {e}",
                self.srun.to_string_lossy()
            ))
        })?;
        let pid = child.id();
        let mut spawned = Spawned::from_child(child, Some(label))?;
        spawned.process = Box::new(Step(spawned.process));
        spawned.stdout = Box::new(QuickAcks::new(pid, spawned.stdout));
        Ok(spawned)
    }

    fn reruns_this_executable(&self) -> bool {
        self.program.is_none()
    }

    /// `SLURM_NTASKS` inside an allocation.
    fn default_workers(&self) -> Option<usize> {
        if !self.as_steps() {
            return None;
        }
        std::env::var("SLURM_NTASKS")
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
    }
}

/// A worker run by `srun`: controlled through its `srun`, whose pid is not
/// the worker's (the pool learns that from the handshake).
#[derive(Debug)]
struct Step(Box<dyn WorkerProcess>);

impl WorkerProcess for Step {
    fn kill(&mut self) -> io::Result<()> {
        self.0.kill()
    }

    fn terminate(&mut self) -> io::Result<()> {
        self.0.terminate()
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.0.try_wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_unbuffered_and_exact() {
        let cmd = Slurm::new()
            .own_jobs(false)
            .srun_args(["--time=5"])
            .program("/bin/worker")
            .command(&WorkerSpec::new().with_args(["a"]))
            .expect("a command");
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--unbuffered",
                "--ntasks=1",
                "--nodes=1",
                "--quiet",
                "--exact",
                "--time=5",
                "--",
                "/bin/worker",
                "a"
            ]
        );
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "CONCURRENT_FUTURES_WORKER" && v.is_some_and(|v| v == "1")));
    }

    #[test]
    fn own_jobs_drop_the_allocation() {
        let cmd = Slurm::new()
            .own_jobs(true)
            .program("w")
            .command(&WorkerSpec::new())
            .expect("a command");
        assert!(!cmd.get_args().any(|a| a == "--exact"));
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "SLURM_JOB_ID" && v.is_none()));
        assert_eq!(Slurm::new().own_jobs(true).default_workers(), None);
    }
}
