//! Python's `concurrent.futures`, done properly in Rust.
//!
//! Two executors hand out one kind of [`Future`]:
//!
//! - [`ThreadPoolExecutor`] runs closures on a pool of threads. Rust has no
//!   GIL, so this is the pool for CPU-bound work too.
//! - [`ProcessPoolExecutor`] runs registered functions ([`task!`]) in worker
//!   processes, for isolation: a crash, an abort or a leak in a task cannot
//!   take your process down, and a worker can be killed.
//!
//! Both implement [`Executor`], and their futures work with [`as_completed`],
//! [`wait`] and `.await`.
//!
//! # Threads
//!
//! [`submit`](ThreadPoolExecutor::submit) returns a [`Future`];
//! [`result`](Future::result) blocks for the value. A panic in a task is an
//! `Err`, not a crash:
//!
//! ```
//! use concurrent_futures::{Error, ThreadPoolExecutor};
//!
//! let pool = ThreadPoolExecutor::new(4)?;
//! let answer = pool.submit(|| 6 * 7);
//! assert_eq!(answer.result()?, 42);
//!
//! let oops = pool.submit(|| -> u8 { panic!("disk full") });
//! assert!(matches!(oops.result(), Err(Error::Panicked { message, .. }) if message == "disk full"));
//! # Ok::<(), Error>(())
//! ```
//!
//! [`map`](ThreadPoolExecutor::map) yields results in input order. It is a
//! lazy iterator: items are pulled and submitted as you iterate, at most
//! [`buffersize`](Map::buffersize) ahead, so an endless input is fine:
//!
//! ```
//! use concurrent_futures::ThreadPoolExecutor;
//!
//! let pool = ThreadPoolExecutor::new(4)?;
//! let squares: Vec<u64> = pool.map(|n: u64| n * n, 0..).take(5).collect::<Result<_, _>>()?;
//! assert_eq!(squares, [0, 1, 4, 9, 16]);
//! # Ok::<(), concurrent_futures::Error>(())
//! ```
//!
//! # Waiting for many
//!
//! [`as_completed`] yields futures as they finish; [`wait`] splits them into
//! done and not done:
//!
//! ```
//! use std::time::Duration;
//! use concurrent_futures::{as_completed, wait, ReturnWhen, ThreadPoolExecutor};
//!
//! let pool = ThreadPoolExecutor::new(3)?;
//! let sleepy = |ms: u64| move || { std::thread::sleep(Duration::from_millis(ms)); ms };
//! let futures = vec![pool.submit(sleepy(60)), pool.submit(sleepy(20)), pool.submit(sleepy(40))];
//!
//! let (done, not_done) = wait(&futures, Some(Duration::from_secs(5)), ReturnWhen::FirstCompleted);
//! assert!(!done.is_empty() && done.len() + not_done.len() == 3);
//!
//! // Usually 20, 40, 60: the order in which they finish.
//! let mut order: Vec<u64> = as_completed(futures).map(|f| f.result().unwrap()).collect();
//! order.sort();
//! assert_eq!(order, [20, 40, 60]);
//! # Ok::<(), concurrent_futures::Error>(())
//! ```
//!
//! # Cancelling and shutting down
//!
//! A future that has not started can be [cancelled](Future::cancel).
//! Dropping a pool finishes the submitted work first;
//! [`shutdown_with`](ThreadPoolExecutor::shutdown_with) can cancel it instead:
//!
//! ```
//! use concurrent_futures::{Error, Shutdown, ThreadPoolExecutor};
//!
//! let pool = ThreadPoolExecutor::new(1)?;
//! let (started_tx, started) = std::sync::mpsc::channel();
//! let (go, go_rx) = std::sync::mpsc::channel::<()>();
//! let busy = pool.submit(move || { started_tx.send(()).unwrap(); go_rx.recv().is_ok() });
//! let queued = pool.submit(|| "never runs");
//! started.recv().unwrap(); // the one worker is now busy
//! assert!(queued.cancel());
//! assert_eq!(queued.result(), Err(Error::Cancelled));
//! go.send(()).unwrap();
//! pool.shutdown_with(Shutdown { wait: true, cancel_futures: true });
//! assert_eq!(busy.result(), Ok(true));
//! assert_eq!(pool.submit(|| 1).result(), Err(Error::Shutdown));
//! # Ok::<(), Error>(())
//! ```
//!
//! # Async
//!
//! A [`Future`] is also a [`std::future::Future`], and [`AsCompleted`] a
//! `Stream`:
//!
//! ```
//! use concurrent_futures::ThreadPoolExecutor;
//!
//! let pool = ThreadPoolExecutor::new(2)?;
//! let fut = pool.submit(|| "from a thread");
//! assert_eq!(futures::executor::block_on(fut), Ok("from a thread"));
//! # Ok::<(), concurrent_futures::Error>(())
//! ```
//!
//! # Processes
//!
//! A worker process is your program started again. [`init`] must come first
//! in `main` (Rust's `if __name__ == "__main__":`): in a worker it runs the
//! worker loop and never returns. Functions are sent by name, registered with
//! [`task!`]; arguments and results are serde types (several arguments travel
//! as a tuple):
//!
//! ```
//! use concurrent_futures::{task, Error, ProcessPoolExecutor};
//!
//! fn heavy_compute(n: u64) -> u64 { (0..n).map(|i| i * i).sum() }
//! fn add(a: u64, b: u64) -> u64 { a + b }
//!
//! fn main() -> Result<(), Error> {
//!     concurrent_futures::init();
//!     let pool = ProcessPoolExecutor::new(2)?;
//!     let sums: Vec<u64> = pool.map(task!(heavy_compute), vec![1_000; 4]).collect::<Result<_, _>>()?;
//!     assert_eq!(sums, [332_833_500; 4]);
//!     assert_eq!(pool.submit(task!(add), (2, 3)).result()?, 5);
//!     Ok(())
//! }
//! ```
//!
//! A worker that dies fails its futures with [`Error::BrokenPool`], naming
//! the exit code or signal and the last lines of its stderr. See
//! [`ProcessPoolExecutor`] for the failure rules, and its builder for
//! initializers, `max_tasks_per_child` and running workers from `#[test]`s.
//!
//! # One function, either pool
//!
//! ```
//! use concurrent_futures::{task, Executor, ThreadPoolExecutor};
//!
//! fn square(x: u64) -> u64 { x * x }
//! fn total(pool: &impl Executor) -> u64 {
//!     pool.map_task(task!(square), 1..=3).map(Result::unwrap).sum()
//! }
//! assert_eq!(total(&ThreadPoolExecutor::new(2)?), 14);
//! # Ok::<(), concurrent_futures::Error>(())
//! ```
//!
//! To choose at run time, hold an [`AnyExecutor`] (`Box<dyn Executor>` is
//! not possible: the trait's methods are generic).
#![forbid(unsafe_code)]

#[cfg(unix)]
mod agent;
mod any_executor;
mod error;
mod executor;
mod future;
#[cfg(unix)]
pub mod launch;
mod lifecycle;
mod map;
mod panic;
#[cfg(unix)]
mod process;
mod promise;
mod ser_message;
mod stats;
mod sync;
mod task;
mod task_arg;
#[cfg(unix)]
mod test_worker;
mod thread;
mod wait;

pub use any_executor::AnyExecutor;
pub use error::{Error, Result};
pub use executor::{Executor, Shutdown};
pub use future::Future;
pub use map::Map;
#[cfg(unix)]
pub use process::{init, ProcessPoolBuilder, ProcessPoolExecutor};
pub use promise::{CancelHandle, Promise};
pub use stats::{HostStats, PoolStats};
pub use task::{Single, Spread, Task, TaskFn};
pub use thread::{InitResult, ThreadPoolBuilder, ThreadPoolExecutor};
pub use wait::{as_completed, wait, AsCompleted, AsCompletedTimeout, AsFuture, ReturnWhen};

/// Enters the worker loop in a pool worker process; see the Unix docs. On
/// platforms without the process pool it does nothing, so that a `main`
/// written for both compiles everywhere.
///
/// # Examples
///
/// ```
/// concurrent_futures::init();
/// ```
#[cfg(not(unix))]
pub fn init() {}

/// Entry points for the fuzz targets (`fuzz/`) and their corpus test; not
/// part of the API.
#[doc(hidden)]
#[cfg(all(unix, feature = "fuzzing"))]
pub mod __fuzz {
    pub use crate::agent::fuzz::{
        agent_seeds, agent_side, link_seeds, link_side, read_agent_reply, AgentReply, AgentRequest,
    };
    pub use crate::process::fuzz::{
        call_frames, frames, fuzz_tasks, pool_side, read_call_result, read_hello, seeds,
        worker_side,
    };
}

/// The Rust blocks of the guides, compiled and run as doctests so that the
/// docs cannot drift from the API.
#[cfg(all(doctest, unix))]
pub mod docs {
    #[doc = include_str!("../docs/guide.md")]
    pub mod guide {}
    #[doc = include_str!("../docs/python.md")]
    pub mod python {}
    #[doc = include_str!("../README.md")]
    pub mod readme {}
}

/// The thread pool's queue and task cell, for the loom models
/// (`tests/loom_future.rs`); only built under `--cfg loom`.
#[doc(hidden)]
#[cfg(loom)]
pub mod __loom {
    pub use crate::thread::job::Job;
    pub use crate::thread::queue::{Queue, Seat, Wake};

    /// A worker that holds a task sent ahead (the crate's `Holder`).
    #[derive(Clone)]
    pub struct Holder(std::sync::Arc<crate::future::Holder>);

    impl std::fmt::Debug for Holder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Holder")
        }
    }

    /// A holder whose `recall(key, still_held)` runs `f`.
    pub fn holder(f: impl Fn(usize, &dyn Fn() -> bool) + Send + Sync + 'static) -> Holder {
        Holder(crate::future::Holder::new(move |key, held| {
            f(key, held);
            true
        }))
    }

    /// A promise whose future a worker may hold, as a process pool's.
    pub fn holdable_promise<T>() -> (crate::Promise<T>, crate::Future<T>) {
        crate::Promise::holdable()
    }

    /// Marks `promise`'s future held by `holder` (sent ahead to a worker).
    pub fn hold<T>(promise: &crate::Promise<T>, holder: &Holder) -> bool {
        promise.hold(&holder.0)
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::task::{linkme, ErasedTask, TaskEntry, TASKS};
    pub use crate::task_arg::{arg_probe, assert_owned, OwnedByDefault};
    #[cfg(unix)]
    pub use crate::test_worker::TEST_WORKERS;
}
