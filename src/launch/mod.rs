//! Where and how a [`ProcessPoolExecutor`](crate::ProcessPoolExecutor)
//! starts its workers.
//!
//! A worker is any process that speaks the pool's protocol on its stdin and
//! stdout: a program whose `main` calls [`init`](crate::init) first, run
//! with the environment the pool asks for. A [`Launcher`] starts one such
//! process and hands back its three streams, a [`WorkerProcess`] to kill
//! and reap it, and a label for error messages. The pool does the rest:
//! handshake, dispatch, failures, time limits.
//!
//! [`Local`] (the default) runs this executable again on this machine;
//! [`Ssh`] runs workers on other machines through the system's `ssh`
//! client, shipping this executable there; [`Slurm`] runs them as Slurm job
//! steps (or jobs) through `srun`. Users can write their own launcher, for example one that runs
//! `kubectl exec -i` into a pod:
//!
//! ```
//! use std::process::{Command, Stdio};
//! use concurrent_futures::launch::{Launcher, Spawned, WorkerSpec};
//! use concurrent_futures::Error;
//!
//! /// Workers in a Kubernetes pod that has the same binary at /app/worker.
//! #[derive(Debug)]
//! struct Kubectl { pod: String }
//!
//! impl Launcher for Kubectl {
//!     fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
//!         let mut cmd = Command::new("kubectl");
//!         cmd.args(["exec", "-i", &self.pod, "--", "env"]);
//!         for (key, value) in spec.env() {
//!             let mut pair = key.to_os_string();
//!             pair.push("=");
//!             pair.push(value);
//!             cmd.arg(pair);
//!         }
//!         cmd.arg("/app/worker").args(spec.args());
//!         Spawned::spawn(cmd, Some(self.pod.clone()))
//!     }
//! }
//!
//! let pool = concurrent_futures::ProcessPoolExecutor::builder()
//!     .launcher(Kubectl { pod: "workers-0".into() })
//!     .max_workers(4)
//!     .build()?; // nothing starts until the first submit
//! # Ok::<(), Error>(())
//! ```

pub(crate) mod backoff;
mod client;
pub(crate) mod exit;
mod hosts;
pub(crate) mod local;
mod remote_stderr;
mod ship;
mod slurm;
mod spawned;
mod ssh;
mod ssh_process;

pub use local::Local;
pub use slurm::Slurm;
pub use spawned::{ChildProcess, Spawned, WorkerProcess};
pub use ssh::{Ssh, FORWARDED_ENV};

use std::ffi::{OsStr, OsString};
use std::fmt;

use crate::{Error, HostStats};

/// Starts worker processes for a pool.
///
/// The pool calls [`launch`](Launcher::launch) from its own threads, never
/// while holding its locks, once per worker it starts (at first use, and to
/// replace a worker that retired, died or was killed at a time limit).
/// A launcher that starts workers elsewhere chooses where; it learns that a
/// worker is gone when the pool drops its [`WorkerProcess`].
///
/// # Examples
///
/// A launcher that runs this executable with an extra environment variable:
///
/// ```
/// use concurrent_futures::launch::{Launcher, Local, Spawned, WorkerSpec};
/// use concurrent_futures::Error;
///
/// #[derive(Debug)]
/// struct Nice(Local);
///
/// impl Launcher for Nice {
///     fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
///         self.0.launch(&spec.clone().with_env("MY_APP_NICE", "1"))
///     }
/// }
/// # let _ = Nice(Local::new());
/// ```
pub trait Launcher: Send + Sync + fmt::Debug + 'static {
    /// Starts one worker process as `spec` says.
    ///
    /// # Errors
    ///
    /// Whatever stopped the start, as [`Error::Io`] (or another variant),
    /// naming where the worker was to run. The pool fails the futures that
    /// were waiting for this worker with it, unless another worker can take
    /// them.
    fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error>;

    /// How many workers this launcher has room for, when it knows (the
    /// slots of its hosts); the pool's `max_workers` defaults to it. `None`
    /// (the default) means the number of CPUs here.
    fn default_workers(&self) -> Option<usize> {
        None
    }

    /// Whether the workers are this executable run again (here or
    /// elsewhere). The pool then passes a test binary's worker entry
    /// ([`test_worker!`](crate::test_worker!)) as the workers' arguments
    /// when none were chosen, or refuses to build in a `#[test]` without
    /// one, so that a worker never runs the whole test suite. The default
    /// is `false`: the launcher runs a program of its own choosing.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::{Launcher, Local, Slurm, Ssh};
    /// assert!(Local::new().reruns_this_executable());
    /// assert!(!Local::program("/usr/local/bin/my-worker").reruns_this_executable());
    /// assert!(Ssh::new().host("node1", 4).reruns_this_executable());
    /// assert!(!Slurm::new().program("/shared/bin/w").reruns_this_executable());
    /// ```
    fn reruns_this_executable(&self) -> bool {
        false
    }

    /// The hosts this launcher starts workers on, as it knows them: for
    /// each, its workers, whether it is up, and the last thing that went
    /// wrong there. The pool's [`stats`](crate::ProcessPoolExecutor::stats)
    /// reports them. The default is none: the pool then reports one entry
    /// named `localhost` holding all its workers. [`Ssh`] lists its hosts.
    ///
    /// Called from `stats()`, maybe often (a progress bar): keep it cheap.
    ///
    /// # Examples
    ///
    /// A launcher that starts every worker on one fixed machine:
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use concurrent_futures::launch::{Launcher, Local, Spawned, WorkerSpec};
    /// use concurrent_futures::{Error, HostStats};
    ///
    /// #[derive(Debug, Default)]
    /// struct Here { launched: AtomicUsize }
    ///
    /// impl Launcher for Here {
    ///     fn launch(&self, spec: &WorkerSpec) -> Result<Spawned, Error> {
    ///         self.launched.fetch_add(1, Ordering::Relaxed);
    ///         Local::new().launch(spec)
    ///     }
    ///     fn hosts(&self) -> Vec<HostStats> {
    ///         vec![HostStats::new("build-box", self.launched.load(Ordering::Relaxed), true, None)]
    ///     }
    /// }
    ///
    /// let hosts = Here::default().hosts();
    /// assert_eq!((hosts[0].name.as_str(), hosts[0].workers), ("build-box", 0));
    /// assert!(Local::new().hosts().is_empty());
    /// ```
    fn hosts(&self) -> Vec<HostStats> {
        Vec::new()
    }
}

/// What a worker process must be given: the arguments for the program, and
/// the environment, which includes the marker that makes
/// [`init`](crate::init) serve instead of returning.
///
/// # Examples
///
/// ```
/// use concurrent_futures::launch::WorkerSpec;
/// let spec = WorkerSpec::new().with_args(["worker_entry", "--exact"]).with_env("MODE", "fast");
/// assert_eq!(spec.args().count(), 2);
/// assert!(spec.env().any(|(k, v)| k == "MODE" && v == "fast"));
/// assert!(spec.env().any(|(k, _)| k == "CONCURRENT_FUTURES_WORKER"));
/// ```
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

impl WorkerSpec {
    /// No arguments; the environment holds only the worker marker.
    pub fn new() -> Self {
        WorkerSpec {
            args: Vec::new(),
            env: vec![(
                OsString::from(crate::process::WORKER_ENV),
                OsString::from("1"),
            )],
        }
    }

    /// Adds arguments for the worker program.
    #[must_use]
    pub fn with_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// The same spec with `args` in place of its arguments.
    pub(crate) fn replace_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.clear();
        self.with_args(args)
    }

    /// Adds (or replaces) an environment variable.
    #[must_use]
    pub fn with_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        let key = key.into();
        self.env.retain(|(k, _)| *k != key);
        self.env.push((key, value.into()));
        self
    }

    /// The arguments to run the worker program with.
    pub fn args(&self) -> impl Iterator<Item = &OsStr> {
        self.args.iter().map(OsString::as_os_str)
    }

    /// The environment variables to set in the worker, marker included.
    pub fn env(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }
}

impl Default for WorkerSpec {
    fn default() -> Self {
        Self::new()
    }
}
