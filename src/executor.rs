//! What both pools share: the [`Executor`] trait and [`Shutdown`] options.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::lifecycle::Pool;
use crate::{Error, Future, Map, Promise, Task};

/// How [`shutdown_with`](Executor::shutdown_with) stops a pool.
///
/// The default, used by `shutdown()` and by `Drop`, is
/// `Shutdown { wait: true, cancel_futures: false }`: finish every submitted
/// task and join the workers.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{Shutdown, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(2)?;
/// let fut = pool.submit(|| 1);
/// pool.shutdown_with(Shutdown { wait: true, cancel_futures: true });
/// assert!(fut.done());
/// assert_eq!(Shutdown::default(), Shutdown { wait: true, cancel_futures: false });
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shutdown {
    /// Block until every running and queued (not cancelled) task has
    /// finished and every worker has exited.
    pub wait: bool,
    /// Cancel every task that has not started.
    pub cancel_futures: bool,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            wait: true,
            cancel_futures: false,
        }
    }
}

/// The interface both pools implement, so code written against
/// `impl Executor` moves between threads and processes by changing one line.
///
/// Work is given as a [`Task`] (made by [`task!`](crate::task!)) because a
/// process pool can only run functions it can find by name; the thread pool
/// runs the same task in-process. Arguments and results are serde types for
/// the same reason.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{task, Executor, ThreadPoolExecutor};
///
/// fn square(x: u64) -> u64 { x * x }
///
/// fn sum_of_squares(pool: &impl Executor, n: u64) -> u64 {
///     pool.map_task(task!(square), 0..n).map(|r| r.unwrap()).sum()
/// }
///
/// let pool = ThreadPoolExecutor::new(2)?;   // or ProcessPoolExecutor::new(2)?
/// assert_eq!(sum_of_squares(&pool, 4), 14);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub trait Executor {
    /// Schedules `task(arg)` and returns its future. Never fails: after
    /// shutdown, or on a broken pool, the future is already finished with
    /// the error.
    fn submit_task<A, R>(&self, task: Task<A, R>, arg: A) -> Future<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// Maps `task` over `items`; see [`Map`] for the options. The input
    /// iterator may borrow (`'a`); the items move into the tasks.
    fn map_task<'a, A, R, I>(&self, task: Task<A, R>, items: I) -> Map<'a, R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a;

    /// Stops the pool; see [`Shutdown`]. Idempotent.
    fn shutdown_with(&self, options: Shutdown);

    /// `shutdown_with(Shutdown::default())`: finish the submitted work and
    /// join the workers.
    fn shutdown(&self) {
        self.shutdown_with(Shutdown::default());
    }

    /// The most workers the pool runs at once.
    fn max_workers(&self) -> usize;
}

/// A pool's shared state, as far as its [`Owner`] needs it.
pub(crate) trait Stop {
    /// Shuts the pool down.
    fn stop(self: &Arc<Self>, options: Shutdown);
}

/// The owner of a pool's workers: shuts the pool down when the last handle
/// (the pool itself, or a `Map` still pulling input) goes away.
pub(crate) struct Owner<S: Stop> {
    pub(crate) shared: Arc<S>,
}

impl<S: Stop> Drop for Owner<S> {
    fn drop(&mut self) {
        self.shared.stop(Shutdown::default());
    }
}

/// The name of the thread that runs a `shutdown_async`.
const SHUTDOWN_THREAD: &str = "concurrent-futures-shutdown";

/// A pool's `shutdown_async`: `shutdown()` on a thread of its own, which
/// completes the returned future once the pool is shut down, so async code
/// awaits it without blocking its runtime. The thread holds the pool: a
/// handle dropped meanwhile does not block either.
///
/// From one of the pool's own threads it does what `shutdown()` does there
/// (closes the pool, waits for nothing) and returns a future already done:
/// waiting there could wait for this very thread. If the thread cannot be
/// started, the pool is closed without waiting and the future fails with
/// [`Error::Io`].
pub(crate) fn shutdown_async<S>(owner: &Arc<Owner<S>>) -> Future<()>
where
    S: Stop + Pool + Send + Sync + 'static,
{
    if owner.shared.on_own_thread() {
        owner.shared.stop(Shutdown::default());
        return Future::ready(Ok(()));
    }
    let (promise, future) = Promise::new();
    let held = Arc::clone(owner);
    let spawned = std::thread::Builder::new()
        .name(SHUTDOWN_THREAD.to_string())
        .spawn(move || {
            held.shared.stop(Shutdown::default());
            // If this was the last handle, its drop shuts down again: a
            // no-op now, done before the future says the pool is down.
            drop(held);
            let _ = promise.complete(Ok(()));
        });
    match spawned {
        Ok(_) => future,
        Err(e) => {
            owner.shared.stop(Shutdown {
                wait: false,
                cancel_futures: false,
            });
            Future::ready(Err(Error::Io(format!(
                "cannot start a thread to wait for the shutdown: {e}"
            ))))
        }
    }
}
