//! [`ThreadPoolExecutor`]: closures on a lazily grown set of threads.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builder::{default_thread_workers, Initializer, ThreadPoolBuilder};
use super::job::Job;
use super::queue::{Queue, Wake};
use super::worker;
use crate::executor::{self, Stop};
use crate::lifecycle::{self, Abandon, Deadline, Pool, Threads};
use crate::map::{self, Source, Submitted};
use crate::stats::{Counters, Ended, PoolStats, Tally};
use crate::{Error, Executor, Future, Map, Shutdown, Task};

/// The smallest default `map` window (the process pool has none: its
/// tasks are chunks). Tiny tasks need a deep window: with a shallow one
/// the workers drain it and sleep, and every item then costs a
/// wake-up (measured: 0.86 M items/s with 8 in flight, 1.9 M/s with 256, on
/// 2 workers). 256 futures in flight cost about 32 KB.
const MIN_MAP_WINDOW: usize = 256;

/// Numbers the pools of this process for the default thread names.
static POOL_COUNTER: AtomicUsize = AtomicUsize::new(0);

pub(crate) struct Config {
    pub(crate) max_workers: usize,
    pub(crate) prefix: String,
    pub(crate) stack_size: Option<usize>,
    pub(crate) initializer: Option<Initializer>,
}

/// The worker threads.
struct Gate {
    /// Workers not yet joined.
    threads: Threads,
    /// Workers ever started.
    spawned: usize,
    /// Each worker's counts of the futures it ended.
    tallies: Vec<Arc<Tally>>,
}

/// The state the workers share with the pool handle.
pub(crate) struct Shared {
    gate: Mutex<Gate>,
    /// The jobs, whether the pool is open, and the workers' states.
    pub(crate) queue: Queue<Job>,
    pub(crate) config: Config,
    /// Held while a `shutdown` joins the threads.
    joining: Mutex<()>,
    /// The futures the pool ended without running them (refused, failed
    /// by a broken pool, cancelled by a shutdown).
    counters: Counters,
}

impl Shared {
    /// Marks the pool broken and fails every queued task.
    pub(crate) fn break_pool(&self, reason: String) {
        tracing::error!(target: "concurrent_futures", %reason, "pool broken");
        let jobs = self.queue.break_with(&reason);
        self.fail_all(jobs, &Error::BrokenPool(reason));
    }

    /// Fails (or, if cancelled meanwhile, drops) jobs that never ran, and
    /// counts them.
    fn fail_all(&self, jobs: Vec<Job>, error: &Error) {
        for job in jobs {
            self.abandon(job, Some(error.clone()));
        }
    }

    /// Cancels (`None`) or fails a job that never ran, and counts it.
    fn abandon(&self, job: Job, error: Option<Error>) {
        self.counters.ended(job.abandon(error));
    }
}

impl Stop for Shared {
    fn stop(self: &Arc<Self>, options: Shutdown) {
        lifecycle::shutdown(&**self, options, None);
    }
}

impl Abandon for Job {
    fn abandon(self, error: Option<Error>) {
        let _ = Job::abandon(self, error);
    }
}

impl Pool for Shared {
    type Job = Job;

    fn close(&self, cancel: bool) -> Vec<Job> {
        self.queue.close();
        if cancel {
            // Queued, so pending (or cancelled already): the caller cancels
            // them all.
            let jobs = self.queue.drain();
            self.counters.ended_n(Ended::Cancelled, jobs.len() as u64);
            jobs
        } else {
            Vec::new()
        }
    }

    fn on_own_thread(&self) -> bool {
        self.gate.lock().threads.include_current()
    }

    fn joining(&self) -> &Mutex<()> {
        &self.joining
    }

    /// A thread cannot be killed: the thread pool has no
    /// `shutdown_timeout`, and never passes a deadline.
    fn wait_or_kill(&self, _: Deadline) -> (bool, Vec<Job>) {
        (true, Vec::new())
    }

    fn next_to_join(&self, _: Option<Deadline>) -> Vec<JoinHandle<()>> {
        self.gate.lock().threads.take()
    }
}

/// Shuts the pool down when the last handle goes away.
type Owner = executor::Owner<Shared>;

/// A pool of threads running closures, like Python's
/// `concurrent.futures.ThreadPoolExecutor`.
///
/// Threads start lazily, one per submit while none is idle, up to
/// `max_workers`; an idle thread is always reused before a new one starts.
/// Tasks are closures returning any `T: Send`; a task that panics gives
/// `Err(Error::Panicked)` and the pool keeps working.
///
/// # Shutdown
///
/// [`shutdown`](ThreadPoolExecutor::shutdown) (and `Drop`) lets every
/// submitted task finish and joins the threads.
/// [`shutdown_with`](ThreadPoolExecutor::shutdown_with) can cancel the queued
/// tasks and not wait. A [`Map`] still being iterated keeps the pool alive
/// until it is dropped. After shutdown, `submit` returns futures already
/// failed with [`Error::Shutdown`].
///
/// # Examples
///
/// ```
/// use concurrent_futures::{as_completed, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(4)?;
/// let futures: Vec<_> = (1..=3u64).map(|n| pool.submit(move || n * 10)).collect();
/// let mut got: Vec<u64> = as_completed(futures).map(|f| f.result().unwrap()).collect();
/// got.sort();
/// assert_eq!(got, [10, 20, 30]);
/// pool.shutdown();
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub struct ThreadPoolExecutor {
    owner: Arc<Owner>,
}

impl ThreadPoolExecutor {
    /// A pool of at most `max_workers` threads.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `max_workers` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    /// let pool = ThreadPoolExecutor::new(4)?;
    /// assert_eq!(pool.max_workers(), 4);
    /// assert!(matches!(ThreadPoolExecutor::new(0), Err(Error::InvalidArgument(_))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(max_workers: usize) -> Result<Self, Error> {
        Self::builder().max_workers(max_workers).build()
    }

    /// The builder, for thread names, an initializer or the stack size.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// let pool = ThreadPoolExecutor::builder().max_workers(2).build()?;
    /// assert_eq!(pool.submit(|| 2 + 2).result()?, 4);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::new()
    }

    pub(crate) fn from_builder(b: ThreadPoolBuilder) -> Result<Self, Error> {
        let max_workers = b.max_workers.unwrap_or_else(default_thread_workers);
        if max_workers == 0 {
            return Err(Error::InvalidArgument(
                "max_workers must be greater than 0".to_string(),
            ));
        }
        Ok(Self::create(max_workers, b))
    }

    /// Creates the pool; `max_workers` is already checked.
    fn create(max_workers: usize, b: ThreadPoolBuilder) -> Self {
        let prefix = b.thread_name_prefix.unwrap_or_else(|| {
            format!(
                "ThreadPoolExecutor-{}",
                POOL_COUNTER.fetch_add(1, Ordering::Relaxed)
            )
        });
        let shared = Arc::new(Shared {
            gate: Mutex::new(Gate {
                threads: Threads::default(),
                spawned: 0,
                tallies: Vec::new(),
            }),
            queue: Queue::new(max_workers),
            joining: Mutex::new(()),
            counters: Counters::default(),
            config: Config {
                max_workers,
                prefix,
                stack_size: b.stack_size,
                initializer: b.initializer,
            },
        });
        ThreadPoolExecutor {
            owner: Arc::new(Owner { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// Schedules `f` and returns the future of its result.
    ///
    /// Never fails: after shutdown the future is already finished with
    /// [`Error::Shutdown`], on a broken pool with [`Error::BrokenPool`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2)?;
    /// let data = vec![1, 2, 3];
    /// let fut = pool.submit(move || data.iter().sum::<i32>());
    /// assert_eq!(fut.result()?, 6);
    /// pool.shutdown();
    /// assert_eq!(pool.submit(|| 0).result(), Err(Error::Shutdown));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn submit<F, T>(&self, f: F) -> Future<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        submit(&self.owner, f)
    }

    /// Runs `f` on every item, yielding the results in input order.
    ///
    /// Lazy: nothing is submitted until the first `next()`; then at most
    /// [`buffersize`](Map::buffersize) tasks (default 4 per worker, at least
    /// 256) run ahead
    /// of the consumer. See [`Map`] for `timeout`, `buffersize` and
    /// `chunksize`.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(4)?;
    /// let lens: Vec<usize> = pool
    ///     .map(|s: &str| s.len(), ["a", "bb", "ccc"])
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(lens, [1, 2, 3]);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn map<'a, F, A, T, I>(&self, f: F, items: I) -> Map<'a, T>
    where
        F: Fn(A) -> T + Send + Sync + 'static,
        A: Send + 'static,
        T: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        let source = ClosureSource {
            items: items.into_iter(),
            f: Arc::new(f),
            owner: Arc::clone(&self.owner),
        };
        let window = map::default_window(self.max_workers(), MIN_MAP_WINDOW);
        Map::new(Box::new(source), window)
    }

    /// Finishes the submitted tasks and joins the threads; see
    /// [`shutdown_with`](ThreadPoolExecutor::shutdown_with). Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// let pool = ThreadPoolExecutor::new(2)?;
    /// let fut = pool.submit(|| 1);
    /// pool.shutdown();
    /// assert!(fut.done());
    /// assert_eq!(pool.num_threads(), 0);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn shutdown(&self) {
        self.shutdown_with(Shutdown::default());
    }

    /// Stops accepting tasks; optionally cancels the queued ones
    /// (`cancel_futures`) and waits for the rest and for the threads to exit
    /// (`wait`). Idempotent; a later call with `wait` joins what an earlier
    /// one left running.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Shutdown, ThreadPoolExecutor};
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// pool.shutdown_with(Shutdown { wait: false, cancel_futures: true });
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn shutdown_with(&self, options: Shutdown) {
        lifecycle::shutdown(&**self.shared(), options, None);
    }

    /// [`shutdown`](ThreadPoolExecutor::shutdown) for async code: it never
    /// blocks the caller's thread. The pool stops accepting tasks at once;
    /// a thread named `concurrent-futures-shutdown` waits for the submitted
    /// tasks and joins the workers, then completes the returned future.
    /// `.await` it on any executor (tokio, `futures::executor`, ...), or
    /// wait on it like any [`Future`].
    ///
    /// Idempotent, like `shutdown`: every call's future completes once the
    /// pool is shut down. Dropping the future does not stop the shutdown,
    /// and dropping the pool meanwhile does not block (the thread holds
    /// it). From one of the pool's own threads (a task, a done-callback)
    /// it does what `shutdown` does there: stops accepting tasks, waits
    /// for nothing, and returns a future already done.
    ///
    /// # Errors
    ///
    /// The future fails with [`Error::Io`] if the thread cannot be
    /// started; the pool is then shut down without waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// futures::executor::block_on(async {
    ///     let pool = ThreadPoolExecutor::new(2)?;
    ///     let fut = pool.submit(|| { std::thread::sleep(Duration::from_millis(50)); 7 });
    ///     pool.shutdown_async().await?;
    ///     assert!(fut.done());
    ///     assert_eq!(fut.await?, 7);
    ///     assert_eq!(pool.submit(|| 0).await, Err(Error::Shutdown));
    ///     Ok::<(), Error>(())
    /// })?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn shutdown_async(&self) -> Future<()> {
        executor::shutdown_async(&self.owner)
    }

    /// The most threads this pool starts.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// assert_eq!(ThreadPoolExecutor::new(3)?.max_workers(), 3);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn max_workers(&self) -> usize {
        self.shared().config.max_workers
    }

    /// A snapshot of the pool: threads, tasks and what happened to them;
    /// see [`PoolStats`]. Cheap: the queue's counts under its lock and
    /// one counter per thread, never a walk over the futures.
    ///
    /// `workers` are the threads started (and not exited), `idle` those
    /// waiting for a task; `starting` is always 0. `restarts`,
    /// `time_limit_kills` and `retries` stay 0 (a thread is never
    /// replaced), and `hosts` is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2)?;
    /// pool.submit(|| 1).result()?;
    /// let _ = pool.submit(|| -> u8 { panic!("boom") }).result();
    /// let s = pool.stats();
    /// assert_eq!((s.completed, s.failed, s.running, s.queued), (1, 1, 0, 0));
    /// assert_eq!(s.workers, pool.num_threads());
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn stats(&self) -> PoolStats {
        let shared = self.shared();
        let mut s = PoolStats::default();
        // The futures ended without running, then those the threads ended.
        shared.counters.fill(&mut s);
        for tally in &shared.gate.lock().tallies {
            tally.add_to(&mut s);
        }
        let (queued, started, waiting) = shared.queue.counts();
        s.queued = queued;
        s.workers = started;
        s.idle = waiting.min(started);
        s.running = started - s.idle;
        s
    }

    /// How many worker threads are started and not yet joined.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// let pool = ThreadPoolExecutor::new(8)?;
    /// assert_eq!(pool.num_threads(), 0); // threads start on demand
    /// pool.submit(|| ()).result()?;
    /// pool.submit(|| ()).result()?;
    /// assert_eq!(pool.num_threads(), 1); // the idle one was reused
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn num_threads(&self) -> usize {
        self.shared().gate.lock().threads.len()
    }
}

impl Default for ThreadPoolExecutor {
    /// A pool of `min(32, cpus + 4)` threads.
    fn default() -> Self {
        Self::create(default_thread_workers(), Self::builder())
    }
}

fn submit<F, T>(owner: &Arc<Owner>, f: F) -> Future<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let shared = &owner.shared;
    let (job, future) = Job::new(f);
    match shared.queue.push(job) {
        Err((job, e)) => shared.abandon(job, Some(e)),
        Ok(Wake::Spawn) => {
            if let Err(e) = spawn_worker(shared) {
                // No thread will ever run these jobs (when none is left).
                let jobs = shared.queue.spawn_failed();
                let error = Error::Io(format!("cannot start a worker thread: {e}"));
                shared.fail_all(jobs, &error);
            }
        }
        Ok(Wake::Nobody | Wake::Sleeper) => {}
    }
    future
}

fn spawn_worker(shared: &Arc<Shared>) -> std::io::Result<()> {
    let mut gate = shared.gate.lock();
    let mut builder =
        thread::Builder::new().name(format!("{}_{}", shared.config.prefix, gate.spawned));
    if let Some(size) = shared.config.stack_size {
        builder = builder.stack_size(size);
    }
    let worker_shared = Arc::clone(shared);
    let tally = Arc::new(Tally::default());
    let own = Arc::clone(&tally);
    let handle = builder.spawn(move || worker::run(worker_shared, &own))?;
    gate.spawned += 1;
    gate.threads.push(handle);
    gate.tallies.push(tally);
    Ok(())
}

/// The input side of [`ThreadPoolExecutor::map`].
struct ClosureSource<I, F> {
    items: I,
    f: Arc<F>,
    owner: Arc<Owner>,
}

impl<I, F, A, T> Source<T> for ClosureSource<I, F>
where
    I: Iterator<Item = A> + Send,
    F: Fn(A) -> T + Send + Sync + 'static,
    A: Send + 'static,
    T: Send + 'static,
{
    fn submit_next(&mut self, chunksize: usize) -> Option<Submitted<T>> {
        let (f, owner) = (&self.f, &self.owner);
        map::submit_next(
            &mut self.items,
            chunksize,
            |item| {
                let f = Arc::clone(f);
                submit(owner, move || f(item))
            },
            |chunk| {
                let f = Arc::clone(f);
                submit(owner, move || chunk.into_iter().map(|x| f(x)).collect())
            },
        )
    }
}

impl Executor for ThreadPoolExecutor {
    fn submit_task<A, R>(&self, task: Task<A, R>, arg: A) -> Future<R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit(move || task.call(arg))
    }

    fn map_task<'a, A, R, I>(&self, task: Task<A, R>, items: I) -> Map<'a, R>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: Send + 'a,
    {
        self.map(move |a| task.call(a), items)
    }

    fn shutdown_with(&self, options: Shutdown) {
        ThreadPoolExecutor::shutdown_with(self, options);
    }

    fn max_workers(&self) -> usize {
        ThreadPoolExecutor::max_workers(self)
    }
}

impl fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let threads = self.shared().gate.lock().threads.len();
        let (shutdown, broken) = self.shared().queue.status();
        f.debug_struct("ThreadPoolExecutor")
            .field("max_workers", &self.shared().config.max_workers)
            .field("threads", &threads)
            .field("shutdown", &shutdown)
            .field("broken", &broken)
            .finish()
    }
}
