//! [`ProcessPoolExecutor`]: registered tasks in worker processes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builder::{Config, ProcessPoolBuilder};
use super::job::{Completion, Job, Payload, Place, Ticket};
use super::link::Fate;
use super::protocol::MAX_FRAME;
use super::shared::Shared;
use crate::executor;
use crate::lifecycle::Deadline;
use crate::map::{self, Source, Submitted, MAP_WINDOW_PER_WORKER};
use crate::stats::Ended;
use crate::task::encode_into;
use crate::{Error, Executor, Future, Map, Promise, Shutdown, Task};

/// The largest encoded argument: a frame's limit less its CALL header.
const MAX_ARGUMENT: usize = MAX_FRAME - 16;
/// The largest automatic chunk size.
const MAX_AUTO_CHUNK: usize = 4096;

/// Shuts the pool down when the last handle goes away.
type Owner = executor::Owner<Shared>;

/// A pool of worker processes running registered tasks, like Python's
/// `concurrent.futures.ProcessPoolExecutor`.
///
/// Workers are this executable started again (or
/// [`worker_command`](ProcessPoolBuilder::worker_command), or another
/// [`launcher`](ProcessPoolBuilder::launcher)); their `main` must call
/// [`init`](crate::init) first. Tasks are functions named with
/// [`task!`](crate::task!); arguments and results travel as postcard over
/// the workers' stdin and stdout. Workers start on demand, up to
/// `max_workers`.
///
/// A task stays in the pool's queue until a worker has room for it: a long
/// task never waits behind another in one worker while a second worker is
/// idle or starting. Tasks measured to be short against the round trip are
/// pipelined, several in flight per worker.
///
/// A task that panics gives `Err(Error::Panicked)` and its worker goes on.
/// A worker that dies (exit, abort, signal) fails the task it ran, and by
/// default every pending one, with [`Error::BrokenPool`] naming the exit
/// code or signal and the last lines of its stderr; the pool is then broken
/// like Python's. The other futures' reason names the task the worker died
/// under ("... while running another task (submit #3)"). With
/// [`restart_workers`](ProcessPoolBuilder::restart_workers) the worker is
/// replaced instead, only the task it ran fails (with
/// [`Error::WorkerDied`]), and the tasks it held but never started run on
/// another worker. No task that started ever runs twice.
///
/// A task given a [time limit](crate::Task::time_limit) (or the pool's
/// [`task_time_limit`](ProcessPoolBuilder::task_time_limit)) that runs past
/// it fails with [`Error::TimeLimit`]; its worker is killed and replaced,
/// and nothing else is touched, under either policy.
///
/// # Shutdown
///
/// [`shutdown`](ProcessPoolExecutor::shutdown) (and `Drop`, like Python's
/// `with` block) lets every submitted task finish, then closes the workers'
/// stdin and reaps them. So a task that never returns would hang your exit,
/// including a `main` that panics or returns an error while it runs. Two
/// ways make that impossible:
///
/// - give such tasks a [time limit](crate::Task::time_limit), or the whole
///   pool a [`task_time_limit`](ProcessPoolBuilder::task_time_limit): a
///   stuck task is killed at its limit;
/// - end with [`shutdown_timeout`](ProcessPoolExecutor::shutdown_timeout),
///   which waits at most its deadline, then kills what still runs and
///   reaps every worker.
///
/// [`terminate_workers`](ProcessPoolExecutor::terminate_workers) and
/// [`kill_workers`](ProcessPoolExecutor::kill_workers) stop the workers at
/// once.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{task, ProcessPoolExecutor};
///
/// fn heavy_compute(n: u64) -> u64 { (0..n).map(|i| i * i).sum() }
///
/// fn main() -> Result<(), concurrent_futures::Error> {
///     concurrent_futures::init();
///     let pool = ProcessPoolExecutor::new(2)?;
///     let sums: Vec<u64> = pool.map(task!(heavy_compute), vec![1_000; 4])
///         .collect::<Result<_, _>>()?;
///     assert_eq!(sums, vec![332_833_500; 4]);
///     Ok(())
/// }
/// ```
pub struct ProcessPoolExecutor {
    owner: Arc<Owner>,
}

impl ProcessPoolExecutor {
    /// A pool of at most `max_workers` processes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `max_workers` is 0 or this is a worker
    /// process.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ProcessPoolExecutor};
    /// assert!(matches!(ProcessPoolExecutor::new(0), Err(Error::InvalidArgument(_))));
    /// ```
    pub fn new(max_workers: usize) -> Result<Self, Error> {
        Self::builder().max_workers(max_workers).build()
    }

    /// The builder, for an initializer, tasks per child, the worker command.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::builder().max_workers(3).build()?;
    /// assert_eq!(pool.max_workers(), 3);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::new()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        let shared = Arc::new(Shared::new(config, super::spawn::start_worker));
        ProcessPoolExecutor {
            owner: Arc::new(Owner { shared }),
        }
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// Schedules `task(arg)` in a worker process and returns its future.
    ///
    /// Never fails: an argument that cannot be serialized gives a future
    /// already failed with [`Error::Codec`]; after shutdown, or on a broken
    /// pool, one failed with [`Error::Shutdown`] or [`Error::BrokenPool`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{task, ProcessPoolExecutor};
    ///
    /// fn add(a: i64, b: i64) -> i64 { a + b }
    ///
    /// fn main() -> Result<(), concurrent_futures::Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::new(1)?;
    ///     assert_eq!(pool.submit(task!(add), (2, 40)).result()?, 42);
    ///     Ok(())
    /// }
    /// ```
    pub fn submit<A, R>(&self, task: Task<A, R>, arg: A) -> Future<R>
    where
        A: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
    {
        // Numbered where it is queued, under the pool's lock.
        let place = Place::Submit(0);
        submit_encoded(&self.owner, task, (None, place), true, |buf| {
            encode_into(&arg, buf)
        })
    }

    /// Runs `task` on every item in worker processes, yielding the results
    /// in input order.
    ///
    /// Lazy like [`ThreadPoolExecutor::map`](crate::ThreadPoolExecutor::map).
    /// Items travel in chunks: by default `len / (4 * workers)` items per
    /// frame (at most 4096) when the input is bounded and knows its length,
    /// else one; set it with [`chunksize`](Map::chunksize).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{task, ProcessPoolExecutor};
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() -> Result<(), concurrent_futures::Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::new(2)?;
    ///     let v: Vec<u64> = pool.map(task!(square), 0..10).chunksize(3).collect::<Result<_, _>>()?;
    ///     assert_eq!(v, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map<'a, A, R, I>(&self, task: Task<A, R>, items: I) -> Map<'a, R>
    where
        A: Serialize + Send + 'static,
        R: DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let items = items.into_iter();
        let workers = self.max_workers();
        // Only a bounded input is chunked automatically: an endless one
        // (`0..` reports a lower bound of usize::MAX) goes item by item, so
        // `buffersize` bounds the items pulled ahead as well as the tasks.
        let known = match items.size_hint() {
            (low, Some(_)) => low,
            (_, None) => 0,
        };
        let auto_chunk =
            (known / MAP_WINDOW_PER_WORKER.saturating_mul(workers)).clamp(1, MAX_AUTO_CHUNK);
        let source = TaskSource {
            items,
            task,
            owner: Arc::clone(&self.owner),
            auto_chunk,
            unwoken: 0,
            pulled: 0,
        };
        Map::new(Box::new(source), map::default_window(workers, 0))
    }

    /// Finishes the submitted tasks and reaps the workers; see
    /// [`shutdown_with`](ProcessPoolExecutor::shutdown_with). Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{task, Error, ProcessPoolExecutor};
    /// fn one() -> u8 { 1 }
    /// fn main() -> Result<(), Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::new(1)?;
    ///     let fut = pool.submit(task!(one), ());
    ///     pool.shutdown();
    ///     assert!(fut.done());
    ///     assert_eq!(pool.submit(task!(one), ()).result(), Err(Error::Shutdown));
    ///     Ok(())
    /// }
    /// ```
    pub fn shutdown(&self) {
        self.shutdown_with(Shutdown::default());
    }

    /// Stops accepting tasks; optionally cancels the queued ones and waits
    /// for the rest and for every worker to exit. Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{ProcessPoolExecutor, Shutdown};
    /// let pool = ProcessPoolExecutor::new(1)?;
    /// pool.shutdown_with(Shutdown { wait: true, cancel_futures: true });
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn shutdown_with(&self, options: Shutdown) {
        self.shared().shutdown(options, None);
    }

    /// [`shutdown`](ProcessPoolExecutor::shutdown) for async code: it never
    /// blocks the caller's thread. The pool stops accepting tasks at once;
    /// a thread named `concurrent-futures-shutdown` waits for the submitted
    /// tasks and reaps the workers, then completes the returned future.
    /// `.await` it on any executor (tokio, `futures::executor`, ...), or
    /// wait on it like any [`Future`].
    ///
    /// Idempotent, like `shutdown`: every call's future completes once the
    /// pool is shut down. Dropping the future does not stop the shutdown,
    /// and dropping the pool meanwhile does not block (the thread holds
    /// it). From one of the pool's own threads (a done-callback) it does
    /// what `shutdown` does there: stops accepting tasks, waits for
    /// nothing, and returns a future already done. To bound the wait, use
    /// [`shutdown_timeout`](ProcessPoolExecutor::shutdown_timeout) on a
    /// blocking thread of your runtime.
    ///
    /// # Errors
    ///
    /// The future fails with [`Error::Io`] if the thread cannot be
    /// started; the pool is then shut down without waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{task, Error, ProcessPoolExecutor};
    ///
    /// fn slow(ms: u64) -> u64 { std::thread::sleep(std::time::Duration::from_millis(ms)); ms }
    ///
    /// fn main() -> Result<(), Error> {
    ///     concurrent_futures::init();
    ///     futures::executor::block_on(async {
    ///         let pool = ProcessPoolExecutor::new(1)?;
    ///         let fut = pool.submit(task!(slow), 50);
    ///         pool.shutdown_async().await?;
    ///         assert!(pool.worker_pids().is_empty());
    ///         assert_eq!(fut.await?, 50);
    ///         Ok(())
    ///     })
    /// }
    /// ```
    pub fn shutdown_async(&self) -> Future<()> {
        executor::shutdown_async(&self.owner)
    }

    /// Shuts down, waiting at most `timeout` for the submitted tasks to
    /// finish; then cancels the tasks that have not started and kills the
    /// workers, whose running tasks fail with [`Error::BrokenPool`] naming
    /// `shutdown_timeout`. Returns once every worker is reaped: no process
    /// is left behind. Returns true if everything finished in time.
    ///
    /// Use it where a stuck task must not hang your exit (see
    /// [`# Shutdown`](ProcessPoolExecutor#shutdown)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{task, Error, ProcessPoolExecutor};
    ///
    /// fn stuck() { std::thread::sleep(Duration::from_secs(3600)) }
    ///
    /// fn main() -> Result<(), Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::new(1)?;
    ///     let fut = pool.submit(task!(stuck), ());
    ///     assert!(!pool.shutdown_timeout(Duration::from_millis(200)));
    ///     assert!(matches!(fut.result(), Err(Error::BrokenPool(why)) if why.contains("shutdown_timeout")));
    ///     assert!(pool.worker_pids().is_empty());
    ///     Ok(())
    /// }
    /// ```
    pub fn shutdown_timeout(&self, timeout: Duration) -> bool {
        self.shared()
            .shutdown(Shutdown::default(), Deadline::after(timeout))
    }

    /// Shuts down, cancelling queued tasks, and sends SIGTERM to every
    /// worker; their running tasks fail with [`Error::BrokenPool`]. Returns
    /// once the workers are reaped. Does nothing to a pool without workers.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::new(1)?;
    /// pool.terminate_workers(); // no worker started: nothing to do
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn terminate_workers(&self) {
        self.stop_workers(false);
    }

    /// Like [`terminate_workers`](ProcessPoolExecutor::terminate_workers)
    /// with SIGKILL.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::new(1)?;
    /// pool.kill_workers();
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn kill_workers(&self) {
        self.stop_workers(true);
    }

    fn stop_workers(&self, kill: bool) {
        let shared = self.shared();
        shared.shutdown(
            Shutdown {
                wait: false,
                cancel_futures: true,
            },
            None,
        );
        let workers = shared.state.lock().workers.clone();
        let fate = if kill {
            "killed by kill_workers()"
        } else {
            "terminated by terminate_workers()"
        };
        for w in workers {
            w.stop(Fate::Stopped(fate.to_string()), kill);
        }
        shared.shutdown(Shutdown::default(), None);
    }

    /// The most worker processes this pool runs.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    /// assert_eq!(ProcessPoolExecutor::new(2)?.max_workers(), 2);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn max_workers(&self) -> usize {
        self.shared().config.max_workers
    }

    /// The process ids of the live workers. A worker on another machine
    /// (`Ssh`, `Slurm`) is listed by the pid its handshake gave, which is a
    /// pid on its own host, once it has answered.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    /// let pool = ProcessPoolExecutor::new(2)?;
    /// assert!(pool.worker_pids().is_empty()); // workers start on demand
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared()
            .state
            .lock()
            .workers
            .iter()
            // The pool's lock comes before a link's.
            .filter_map(|w| w.pid.or_else(|| w.link.lock().hello_pid))
            .collect()
    }
}

/// Queues a job whose argument `encode` writes; the common path of submit
/// and map.
fn submit_encoded<A, R, V>(
    owner: &Arc<Owner>,
    task: Task<A, R>,
    (items, place): (Option<u32>, Place),
    wake: bool,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
) -> Future<V>
where
    V: DeserializeOwned + Send + 'static,
{
    let (promise, future) = Promise::<V>::holdable();
    let mut payload = Vec::new();
    let shared = &owner.shared;
    if let Err(e) = encode(&mut payload).and_then(|()| fits_a_frame(payload.len())) {
        let counters = &shared.counters;
        let _ = promise.complete_then(Err(e), |_| counters.ended(Ended::Error));
        return future;
    }
    shared.enqueue(
        Job {
            entry: task.entry(),
            items,
            payload: Payload::Inline(payload),
            time_limit: Job::run_limit(task.limit().or(shared.config.task_time_limit), items),
            completion: Box::new(promise) as Box<dyn Completion>,
            ticket: Ticket::new(&shared.counters),
            first_seq: None,
            retries_left: task.retry_limit().unwrap_or(shared.config.task_retries),
            tries: Vec::new(),
            place,
        },
        wake,
    );
    future
}

/// Refuses an argument too big for one frame (it would break the worker's
/// stream for every task, not just this one).
fn fits_a_frame(len: usize) -> Result<(), Error> {
    if len > MAX_ARGUMENT {
        return Err(Error::Codec(format!(
            "an argument of {len} bytes exceeds the frame limit of {MAX_ARGUMENT} bytes"
        )));
    }
    Ok(())
}

/// The input side of [`ProcessPoolExecutor::map`].
struct TaskSource<I, A: 'static, R: 'static> {
    items: I,
    task: Task<A, R>,
    owner: Arc<Owner>,
    auto_chunk: usize,
    /// Tasks queued since the writers were last woken (see `flush`).
    unwoken: usize,
    /// Items pulled so far: the index of the next one.
    pulled: u64,
}

impl<I, A, R> Source<R> for TaskSource<I, A, R>
where
    I: Iterator<Item = A> + Send,
    A: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    fn submit_next(&mut self, chunksize: usize) -> Option<Submitted<R>> {
        let (owner, task, first) = (&self.owner, self.task, self.pulled);
        // Queued without waking a writer; `flush` wakes them once.
        let submitted = map::submit_next(
            &mut self.items,
            chunksize,
            |item| {
                let place = Place::Items { first, len: 1 };
                submit_encoded(owner, task, (None, place), false, |b| encode_into(&item, b))
            },
            |chunk| {
                let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
                let place = Place::Items {
                    first,
                    len: chunk.len() as u64,
                };
                submit_encoded(owner, task, (Some(n), place), false, |b| {
                    encode_into(&chunk, b)
                })
            },
        );
        match &submitted {
            Some(Submitted::One(_)) => self.pulled += 1,
            Some(Submitted::Chunk(_, n)) => self.pulled += *n as u64,
            None => return None,
        }
        self.unwoken += 1;
        submitted
    }

    fn default_chunksize(&self) -> usize {
        self.auto_chunk
    }

    fn flush(&mut self) {
        if self.unwoken > 0 {
            self.owner.shared.wake_writers(self.unwoken);
            self.unwoken = 0;
        }
    }
}

impl Executor for ProcessPoolExecutor {
    fn submit_task<A, R>(&self, task: Task<A, R>, arg: A) -> Future<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit(task, arg)
    }

    fn map_task<'a, A, R, I>(&self, task: Task<A, R>, items: I) -> Map<'a, R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        self.map(task, items)
    }

    fn shutdown_with(&self, options: Shutdown) {
        ProcessPoolExecutor::shutdown_with(self, options);
    }

    fn max_workers(&self) -> usize {
        ProcessPoolExecutor::max_workers(self)
    }
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared().state.lock();
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.shared().config.max_workers)
            .field(
                "workers",
                &st.workers.iter().map(|w| w.name()).collect::<Vec<_>>(),
            )
            .field("queued", &st.queue.len())
            .field("shutdown", &st.closing)
            .field("broken", &st.broken)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_argument_beyond_the_frame_limit_is_a_codec_error() {
        assert_eq!(fits_a_frame(MAX_ARGUMENT), Ok(()));
        assert!(matches!(
            fits_a_frame(MAX_ARGUMENT + 1),
            Err(Error::Codec(msg)) if msg.contains("exceeds the frame limit")
        ));
    }
}
