//! [`AnyExecutor`]: a thread or a process pool, chosen at run time.

use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(unix)]
use crate::ProcessPoolExecutor;
use crate::{Executor, Future, Map, PoolStats, Shutdown, Task, ThreadPoolExecutor};

/// Either pool, chosen at run time; it implements [`Executor`].
///
/// [`Executor`] has generic methods, so it cannot be a trait object
/// (`Box<dyn Executor>` is error E0038). Where the choice between threads
/// and processes is made at run time (a flag, a configuration file), hold
/// an `AnyExecutor` instead: both pools convert into it with `From`.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{task, AnyExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// fn main() -> Result<(), concurrent_futures::Error> {
///     concurrent_futures::init();
///     let use_processes = std::env::args().any(|a| a == "--processes");
///     let pool: AnyExecutor = if use_processes {
///         ProcessPoolExecutor::new(2)?.into()
///     } else {
///         ThreadPoolExecutor::new(2)?.into()
///     };
///     let sum: u64 = pool.map_task(task!(square), 1..=3).map(Result::unwrap).sum();
///     assert_eq!(sum, 14);
///     assert_eq!(pool.max_workers(), 2);
///     Ok(())
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyExecutor {
    /// A [`ThreadPoolExecutor`].
    Threads(ThreadPoolExecutor),
    /// A [`ProcessPoolExecutor`] (Unix only).
    #[cfg(unix)]
    Processes(ProcessPoolExecutor),
}

impl From<ThreadPoolExecutor> for AnyExecutor {
    fn from(pool: ThreadPoolExecutor) -> Self {
        AnyExecutor::Threads(pool)
    }
}

#[cfg(unix)]
impl From<ProcessPoolExecutor> for AnyExecutor {
    fn from(pool: ProcessPoolExecutor) -> Self {
        AnyExecutor::Processes(pool)
    }
}

/// `$call` on whichever pool `$any` holds, named `$pool`.
macro_rules! each_pool {
    ($any:expr, $pool:ident => $call:expr) => {
        match $any {
            AnyExecutor::Threads($pool) => $call,
            #[cfg(unix)]
            AnyExecutor::Processes($pool) => $call,
        }
    };
}

impl AnyExecutor {
    /// `shutdown` for async code, on whichever pool this holds: see
    /// [`ThreadPoolExecutor::shutdown_async`] and
    /// [`ProcessPoolExecutor::shutdown_async`].
    ///
    /// # Errors
    ///
    /// The future fails with [`Error::Io`](crate::Error::Io) if the
    /// thread that waits cannot be started.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{task, AnyExecutor, Error, Executor, ThreadPoolExecutor};
    ///
    /// fn one() -> u8 { 1 }
    ///
    /// let pool: AnyExecutor = ThreadPoolExecutor::new(2)?.into();
    /// let fut = pool.submit_task(task!(one), ());
    /// futures::executor::block_on(pool.shutdown_async())?;
    /// assert!(fut.done());
    /// # Ok::<(), Error>(())
    /// ```
    pub fn shutdown_async(&self) -> Future<()> {
        each_pool!(self, p => p.shutdown_async())
    }

    /// The pool's [`stats`](ThreadPoolExecutor::stats), whichever it is.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{AnyExecutor, ThreadPoolExecutor};
    ///
    /// let pool: AnyExecutor = ThreadPoolExecutor::new(2)?.into();
    /// assert_eq!(pool.stats().completed, 0);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn stats(&self) -> PoolStats {
        each_pool!(self, p => p.stats())
    }
}

impl Executor for AnyExecutor {
    fn submit_task<A, R>(&self, task: Task<A, R>, arg: A) -> Future<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        each_pool!(self, p => p.submit_task(task, arg))
    }

    fn map_task<'a, A, R, I>(&self, task: Task<A, R>, items: I) -> Map<'a, R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        each_pool!(self, p => p.map_task(task, items))
    }

    fn shutdown_with(&self, options: Shutdown) {
        each_pool!(self, p => Executor::shutdown_with(p, options))
    }

    fn max_workers(&self) -> usize {
        each_pool!(self, p => Executor::max_workers(p))
    }
}
