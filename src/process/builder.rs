//! [`ProcessPoolBuilder`]: the options of a [`ProcessPoolExecutor`].

use std::ffi::OsString;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ProcessPoolExecutor;
use crate::launch::{Launcher, Local, WorkerSpec};
use crate::task::{decode, encode_into, ErasedTask};
use crate::{Error, InitResult, Task};

/// Decodes an initializer's result and says whether it failed.
pub(crate) type Judge = Arc<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

/// The initializer as the pool holds it: the task, its encoded argument, and
/// how to judge the encoded result.
#[derive(Clone)]
pub(crate) struct ProcessInitializer {
    pub(crate) entry: &'static dyn ErasedTask,
    pub(crate) arg: Vec<u8>,
    pub(crate) judge: Judge,
}

/// The pool's settings once built.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) max_workers: usize,
    pub(crate) max_tasks_per_child: Option<usize>,
    pub(crate) initializer: Option<ProcessInitializer>,
    pub(crate) launcher: Arc<dyn Launcher>,
    pub(crate) spec: WorkerSpec,
    pub(crate) handshake_timeout: Duration,
    pub(crate) restart_workers: bool,
    pub(crate) task_time_limit: Option<Duration>,
    pub(crate) task_retries: u32,
    /// Launches run on a thread of their own, so that a `submit` never
    /// waits for a connection, a copy of the binary or a job to start:
    /// every launcher but [`Local`], whose launch is a fork and exec.
    pub(crate) launch_apart: bool,
}

/// The options of a [`ProcessPoolExecutor`], set by value and checked by
/// [`build`](ProcessPoolBuilder::build).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{task, ProcessPoolExecutor};
///
/// fn setup(level: u8) { std::env::set_var("LEVEL", level.to_string()); }
/// fn level() -> String { std::env::var("LEVEL").unwrap_or_default() }
///
/// fn main() -> Result<(), concurrent_futures::Error> {
///     concurrent_futures::init();
///     let pool = ProcessPoolExecutor::builder()
///         .max_workers(2)
///         .initializer(task!(setup), 3)
///         .max_tasks_per_child(100)
///         .handshake_timeout(Duration::from_secs(20))
///         .build()?;
///     assert_eq!(pool.submit(task!(level), ()).result()?, "3");
///     Ok(())
/// }
/// ```
#[must_use = "a builder does nothing until .build() is called"]
pub struct ProcessPoolBuilder {
    max_workers: Option<usize>,
    max_tasks_per_child: Option<usize>,
    initializer: Option<Result<ProcessInitializer, Error>>,
    launcher: Option<Arc<dyn Launcher>>,
    /// The launcher is not [`Local`] (see `Config::launch_apart`).
    launch_apart: bool,
    spec: WorkerSpec,
    handshake_timeout: Duration,
    restart_workers: bool,
    task_time_limit: Option<Duration>,
    task_retries: u32,
    /// Whether `worker_args` was called (even with none).
    args_chosen: bool,
}

/// The default number of worker processes: the number of CPUs.
pub(crate) fn default_process_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl ProcessPoolBuilder {
    pub(crate) fn new() -> Self {
        ProcessPoolBuilder {
            max_workers: None,
            max_tasks_per_child: None,
            initializer: None,
            launcher: None,
            launch_apart: false,
            spec: WorkerSpec::new(),
            handshake_timeout: Duration::from_secs(10),
            restart_workers: false,
            task_time_limit: None,
            task_retries: 0,
            args_chosen: false,
        }
    }

    /// The most worker processes (default: the number of CPUs). Must be at
    /// least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor};
    /// assert!(matches!(ProcessPoolExecutor::builder().max_workers(0).build(),
    ///                  Err(Error::InvalidArgument(_))));
    /// ```
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Replaces a worker after it has run `n` tasks (default: never), like
    /// Python's `max_tasks_per_child`. Must be at least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor};
    /// assert!(matches!(ProcessPoolExecutor::builder().max_tasks_per_child(0).build(),
    ///                  Err(Error::InvalidArgument(_))));
    /// ```
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Runs `task(arg)` in every worker before its first task. If it panics,
    /// or returns an `Err` (when its result is a `Result`), the pool is
    /// broken: pending and later futures fail with [`Error::BrokenPool`]
    /// naming the initializer.
    ///
    /// # Examples
    ///
    /// See [`ProcessPoolBuilder`].
    pub fn initializer<A, R>(mut self, task: Task<A, R>, arg: A) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: InitResult + Serialize + DeserializeOwned + Send + 'static,
    {
        let mut bytes = Vec::new();
        self.initializer = Some(encode_into(&arg, &mut bytes).map(|()| ProcessInitializer {
            entry: task.entry(),
            arg: bytes,
            judge: Arc::new(|bytes| {
                decode::<R>(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(InitResult::into_init_result)
            }),
        }));
        self
    }

    /// Runs `program` as the worker instead of this executable. Its `main`
    /// must call [`init`](crate::init) first and name (with
    /// [`task!`](crate::task!)) every task the pool will send.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::builder()
    ///     .worker_command("/usr/local/bin/my-worker")
    ///     .build()?;
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn worker_command(mut self, program: impl Into<OsString>) -> Self {
        self.launcher = Some(Arc::new(Local::program(program)));
        self
    }

    /// Arguments for the worker command. In a `#[test]`, either put
    /// [`test_worker!`](crate::test_worker!) in the test binary (the pool
    /// then selects its entry test by itself), or pass the name of a test
    /// that calls [`init`](crate::init), so that the re-run test binary
    /// becomes a worker: `["worker_entry", "--exact", "--nocapture"]`.
    /// Setting them, even to none, is an explicit choice: the pool then
    /// neither selects an entry test nor refuses.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use concurrent_futures::ProcessPoolExecutor;
    /// // In a test file, next to `#[test] fn worker_entry() { concurrent_futures::init(); }`:
    /// let pool = ProcessPoolExecutor::builder()
    ///     .worker_args(["worker_entry", "--exact", "--nocapture"])
    ///     .build()?;
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn worker_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        // A second call replaces the first, as it did before launchers.
        self.spec = self.spec.replace_args(args);
        self.args_chosen = true;
        self
    }

    /// Sets an environment variable for the workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{task, ProcessPoolExecutor};
    /// fn mode() -> String { std::env::var("MODE").unwrap_or_default() }
    /// fn main() -> Result<(), concurrent_futures::Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::builder().max_workers(1).env("MODE", "fast").build()?;
    ///     assert_eq!(pool.submit(task!(mode), ()).result()?, "fast");
    ///     Ok(())
    /// }
    /// ```
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.spec = self.spec.with_env(key, value);
        self
    }

    /// Starts workers through `launcher` instead of running this
    /// executable again on this machine: see [`crate::launch`]. The pool's
    /// `max_workers` defaults to the launcher's
    /// [`default_workers`](Launcher::default_workers).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::launch::Local;
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::builder().launcher(Local::new()).build()?;
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn launcher<L: Launcher>(mut self, launcher: L) -> Self {
        self.launch_apart = std::any::TypeId::of::<L>() != std::any::TypeId::of::<Local>();
        self.launcher = Some(Arc::new(launcher));
        self
    }

    /// How long a new worker may take to answer the handshake (default
    /// 10 s). A worker that does not answer is killed and the pool breaks
    /// with an error that names [`init`](crate::init).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::builder().handshake_timeout(Duration::from_secs(30)).build()?;
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// When a worker dies, start a replacement and fail only the task it
    /// ran (with [`Error::WorkerDied`](crate::Error::WorkerDied)), instead
    /// of breaking the whole pool as Python does (the default). A failing initializer still breaks the pool, and so does a
    /// worker that dies before it is ready (during the handshake or its
    /// initializer): its replacement would fail the same way.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::builder().restart_workers(true).build()?;
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn restart_workers(mut self, yes: bool) -> Self {
        self.restart_workers = yes;
        self
    }

    /// A run-time limit for every task that does not set its own with
    /// [`Task::time_limit`]. It counts from when the task starts in its
    /// worker, not from `submit`. A task that runs past it has its worker
    /// killed and replaced, and its future fails with
    /// [`Error::TimeLimit`]; the tasks the worker had not started go to
    /// another worker, the others are untouched, and the pool is not
    /// broken, under either [`restart_workers`](Self::restart_workers)
    /// policy. In a [`map`](crate::ProcessPoolExecutor::map) the limit
    /// applies to each item: a chunk of `n` items may run `n` times it, and
    /// one that runs longer fails with [`Error::ChunkTimeLimit`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{task, Error, ProcessPoolExecutor};
    ///
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    ///
    /// fn main() -> Result<(), Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::builder()
    ///         .max_workers(1)
    ///         .task_time_limit(Duration::from_millis(300))
    ///         .build()?;
    ///     let slow = pool.submit(task!(nap), 60_000);
    ///     let quick = pool.submit(task!(nap), 1);
    ///     assert_eq!(slow.result(), Err(Error::TimeLimit(Duration::from_millis(300))));
    ///     assert_eq!(quick.result()?, 1);
    ///     Ok(())
    /// }
    /// ```
    pub fn task_time_limit(mut self, limit: Duration) -> Self {
        self.task_time_limit = Some(limit);
        self
    }

    /// How many times a task runs again when its worker process dies under
    /// it, for every task that does not set its own with
    /// [`Task::retries`] (default 0: Python's behaviour, the future
    /// fails). The task runs again on another worker, never twice at once,
    /// and a task with a retry left does not break the pool when its
    /// worker dies: the worker is replaced, as under
    /// [`restart_workers`](Self::restart_workers). A task that panicked,
    /// returned an error or ran past its time limit is never run again.
    /// After the last try, the future's error names every try.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::builder().task_retries(2).build()?;
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn task_retries(mut self, n: u32) -> Self {
        self.task_retries = n;
        self
    }

    /// Checks the options and creates the pool. No process starts until the
    /// first task is submitted.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for 0 workers or 0 tasks per child, or
    /// when called inside a worker process (pools do not nest: that would
    /// let a missing [`init`](crate::init) fork without bound), or from a
    /// `#[test]` of a binary without [`test_worker!`](crate::test_worker!)
    /// when neither `worker_args` nor `worker_command` (nor another
    /// [`launcher`](Self::launcher)) is set (its workers
    /// would run the whole test suite);
    /// [`Error::Codec`] if the initializer's argument cannot be serialized.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::builder().max_workers(2).build()?;
    /// assert_eq!(pool.max_workers(), 2);
    /// assert!(pool.worker_pids().is_empty());
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn build(self) -> Result<ProcessPoolExecutor, Error> {
        if super::child::is_worker_process() {
            return Err(Error::InvalidArgument(
                "a process pool cannot be created inside a worker process".to_string(),
            ));
        }
        let launcher = self.launcher.unwrap_or_else(|| Arc::new(Local::new()));
        // This executable run again, here or elsewhere: in a test binary,
        // only its entry test.
        let rerun_here = launcher.reruns_this_executable();
        let max_workers = self
            .max_workers
            .or_else(|| launcher.default_workers())
            .unwrap_or_else(default_process_workers);
        if max_workers == 0 {
            return Err(Error::InvalidArgument(
                "max_workers must be greater than 0".to_string(),
            ));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::InvalidArgument(
                "max_tasks_per_child must be at least 1".to_string(),
            ));
        }
        let initializer = self.initializer.transpose()?;
        let mut spec = self.spec;
        if rerun_here && !self.args_chosen {
            spec = spec.with_args(crate::test_worker::default_worker_args()?);
        }
        Ok(ProcessPoolExecutor::from_config(Config {
            max_workers,
            max_tasks_per_child: self.max_tasks_per_child,
            initializer,
            launcher,
            spec,
            handshake_timeout: self.handshake_timeout,
            restart_workers: self.restart_workers,
            task_time_limit: self.task_time_limit,
            task_retries: self.task_retries,
            launch_apart: self.launch_apart,
        }))
    }
}

impl fmt::Debug for ProcessPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolBuilder")
            .field("max_workers", &self.max_workers)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("initializer", &self.initializer.is_some())
            .field("launcher", &self.launcher)
            .field("spec", &self.spec)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("restart_workers", &self.restart_workers)
            .field("task_time_limit", &self.task_time_limit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn worker_args_set_twice_keeps_the_second() {
        let b = crate::ProcessPoolExecutor::builder()
            .worker_args(["first", "--exact"])
            .worker_args(["second"]);
        let args: Vec<_> = b.spec.args().collect();
        assert_eq!(args, ["second"]);
    }
}
