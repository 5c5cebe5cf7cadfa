//! The crate's one error type.

use std::fmt;

/// A specialized [`Result`](std::result::Result) whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong with a task, a future or a pool.
///
/// Errors are plain values: they are `Clone`, `PartialEq` and `Eq`, so a
/// test can `assert_eq!` them and a future can hand the same failure to
/// several observers. Messages are lowercase without a trailing period.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{Error, ThreadPoolExecutor};
///
/// assert!(matches!(ThreadPoolExecutor::new(0), Err(Error::InvalidArgument(_))));
///
/// let pool = ThreadPoolExecutor::new(1)?;
/// let fut = pool.submit(|| -> u32 { panic!("boom") });
/// match fut.result() {
///     Err(Error::Panicked { message, .. }) => assert_eq!(message, "boom"),
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The future was cancelled before its task started.
    #[error("the future was cancelled")]
    Cancelled,
    /// A deadline passed first. `unfinished` of `total` futures were still
    /// pending (both are 1 for a wait on a single future or a `map` item).
    #[error("{}", Timeout(*unfinished, *total))]
    Timeout {
        /// How many of the awaited futures had not finished.
        unfinished: usize,
        /// How many distinct futures were awaited.
        total: usize,
    },
    /// The task panicked (in a worker thread or a worker process).
    #[error("{}", Panic(message, location.as_deref()))]
    Panicked {
        /// The panic payload when it was a string, else a placeholder.
        message: String,
        /// `file:line:column` of the panic, when it is known.
        location: Option<String>,
        /// The task's backtrace, captured only when the user asked for
        /// backtraces (`RUST_BACKTRACE=1` or `RUST_LIB_BACKTRACE=1`, in the
        /// worker's environment for a process pool); else `None`. Not part
        /// of the message: see [`Error::backtrace`].
        backtrace: Option<String>,
    },
    /// The pool can no longer run tasks: its initializer failed or a worker
    /// died. The reason names the exit status or signal and, for a process,
    /// the last lines of its stderr.
    #[error("the pool is broken: {0}")]
    BrokenPool(String),
    /// The pool was shut down before the task could be scheduled.
    #[error("cannot schedule new tasks after shutdown")]
    Shutdown,
    /// An argument was out of range (zero workers, zero chunk size, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The value of this future was already moved out by an earlier call.
    #[error("the result of this future was already taken")]
    AlreadyTaken,
    /// A worker process does not know the named task (or knows it with other
    /// argument or result types).
    #[error("task not found in the worker: {0}")]
    TaskNotFound(String),
    /// An argument or result could not be serialized or deserialized.
    #[error("codec error: {0}")]
    Codec(String),
    /// A worker process broke the wire protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An operating-system call failed.
    #[error("i/o error: {0}")]
    Io(String),
    /// The task ran past its run-time limit (the limit it had), and its
    /// worker process was killed.
    #[error("the task ran past its time limit of {0:?}")]
    TimeLimit(std::time::Duration),
    /// A chunk of a `map` ran past its time limit: `limit` per item, so
    /// `items` times `limit` for the chunk (no item that keeps to its
    /// limit fails for sharing a chunk). Its worker process was killed;
    /// which item ran long is not known. The `map` yields this error and
    /// ends, as on any other error.
    #[error(
        "a chunk of {items} items ran past its time limit of {:?} ({limit:?} per item)",
        limit.saturating_mul(u32::try_from(*items).unwrap_or(u32::MAX))
    )]
    ChunkTimeLimit {
        /// How many items the chunk carried.
        items: usize,
        /// The time limit of each item.
        limit: std::time::Duration,
    },
    /// The worker process running the task died (exit, abort, signal) and,
    /// under `restart_workers`, the pool goes on with a replacement. The
    /// reason names the worker, its exit status or signal and the last
    /// lines of its stderr. (Under the default policy a death breaks the
    /// pool: [`Error::BrokenPool`].)
    #[error("the task's worker died, and the pool goes on: {0}")]
    WorkerDied(String),
    /// The link to the host that ran the task died: its agent was killed,
    /// its `ssh` client or `srun` step ended, or it went silent (a network
    /// gone). The task's own fate is unknown; the message names the host.
    /// Under `restart_workers` the pool goes on with its other hosts, and
    /// opens a new link to this one for its next worker there (an ssh host
    /// that then fails to answer is left alone for a growing pause).
    #[error("the task's host was lost: {0}")]
    HostLost(String),
}

impl Error {
    /// The timeout error for a wait on a single future.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Error;
    /// assert_eq!(Error::timeout().to_string(), "timed out");
    /// ```
    pub const fn timeout() -> Error {
        Error::Timeout {
            unfinished: 1,
            total: 1,
        }
    }

    /// True for [`Error::Timeout`], whatever its counts.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Error;
    /// assert!(Error::Timeout { unfinished: 2, total: 4 }.is_timeout());
    /// assert!(!Error::Cancelled.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// The backtrace of a panicked task, if one was captured (see
    /// [`Error::Panicked`]); `None` for every other error.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// let err = pool.submit(|| -> u8 { panic!("boom") }).result().unwrap_err();
    /// // Some(..) when RUST_BACKTRACE=1 is set, None otherwise.
    /// if let Some(bt) = err.backtrace() {
    ///     eprintln!("{err}\n{bt}");
    /// }
    /// assert_eq!(Error::Cancelled.backtrace(), None);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn backtrace(&self) -> Option<&str> {
        match self {
            Error::Panicked { backtrace, .. } => backtrace.as_deref(),
            _ => None,
        }
    }

    /// Builds [`Error::Panicked`] from a payload caught by `catch_unwind`.
    pub(crate) fn from_panic(
        payload: &(dyn std::any::Any + Send),
        location: Option<String>,
        backtrace: Option<String>,
    ) -> Self {
        Error::Panicked {
            message: panic_message(payload),
            location,
            backtrace,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

/// The text of a panic payload: `&str` and `String` payloads as they are.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

struct Timeout(usize, usize);

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 <= 1 {
            f.write_str("timed out")
        } else {
            write!(
                f,
                "timed out: {} (of {}) futures unfinished",
                self.0, self.1
            )
        }
    }
}

struct Panic<'a>(&'a str, Option<&'a str>);

impl fmt::Display for Panic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(at) => write!(f, "task panicked at {at}: {}", self.0),
            None => write!(f, "task panicked: {}", self.0),
        }
    }
}
