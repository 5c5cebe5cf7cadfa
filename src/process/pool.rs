//! [`ProcessPoolExecutor`]: registered tasks in worker processes.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builder::{Config, ProcessPoolBuilder};
use super::conn::{read_loop, write_loop, Completion, Job, Ticket, Worker};
use super::launcher::launch;
use super::protocol::MAX_FRAME;
use crate::executor::{self, Stop};
use crate::map::{Source, Submitted};
use crate::task::encode_into;
use crate::{Error, Executor, Future, Map, Promise, Shutdown, Task};

/// Chunks a `map` keeps in flight per worker by default.
const MAP_WINDOW_PER_WORKER: usize = 4;
/// The largest encoded argument: a frame's limit less its CALL header.
const MAX_ARGUMENT: usize = MAX_FRAME - 16;
/// The largest automatic chunk size.
const MAX_AUTO_CHUNK: usize = 4096;

/// What submitters, workers and `shutdown` agree on, under one lock.
struct State {
    /// Dropped at shutdown: writers stop once the queue is empty.
    sender: Option<Sender<Job>>,
    broken: Option<String>,
    workers: Vec<Arc<Worker>>,
    /// Writer, reader and stderr threads not yet joined.
    threads: Vec<JoinHandle<()>>,
}

/// The state the worker threads share with the pool handle.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) jobs: Receiver<Job>,
    state: Mutex<State>,
    /// Jobs submitted and not yet finished (queued or in flight).
    outstanding: Arc<AtomicUsize>,
    seq: AtomicU64,
    /// Held while a `shutdown` joins the threads.
    joining: Mutex<()>,
}

impl Shared {
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// True once shutdown has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.state.lock().sender.is_none()
    }

    /// Marks the pool broken, fails every queued job and stops the workers.
    pub(crate) fn break_pool(&self, reason: String) {
        let workers = {
            let mut st = self.state.lock();
            if st.broken.is_some() {
                return;
            }
            st.broken = Some(reason.clone());
            st.workers.clone()
        };
        while let Ok(job) = self.jobs.try_recv() {
            job.abandon(Some(Error::BrokenPool(reason.clone())));
        }
        for w in workers {
            w.signal("stopped because the pool broke", false);
        }
    }

    /// Jobs a writer took for a worker that died before sending them.
    pub(crate) fn reroute(self: &Arc<Self>, jobs: Vec<Job>) {
        let st = self.state.lock();
        let error = match (&st.broken, &st.sender) {
            (Some(reason), _) => Error::BrokenPool(reason.clone()),
            (None, Some(tx)) => {
                for job in jobs {
                    if let Err(e) = tx.send(job) {
                        e.into_inner()
                            .abandon(Some(Error::BrokenPool("a worker died".to_string())));
                    }
                }
                // The dead worker's exit may have been handled before these
                // jobs were back in the queue, and so started no replacement.
                let mut st = st;
                self.replace_if_needed(&mut st);
                return;
            }
            (None, None) => Error::BrokenPool("a worker died during shutdown".to_string()),
        };
        drop(st);
        for job in jobs {
            job.abandon(Some(error.clone()));
        }
    }

    /// A worker exited. `reason` is `None` for a clean exit (retired or
    /// shut down). A worker that is not `replaceable` (it never became
    /// ready) breaks the pool even under `restart_workers`. Returns the
    /// error its futures get.
    pub(crate) fn worker_gone(
        self: &Arc<Self>,
        worker: &Worker,
        reason: Option<String>,
        replaceable: bool,
    ) -> Error {
        let mut st = self.state.lock();
        st.workers.retain(|w| !std::ptr::eq(Arc::as_ptr(w), worker));
        let error = match (&st.broken, reason) {
            (Some(broken), _) => return Error::BrokenPool(broken.clone()),
            (None, None) => Error::BrokenPool("the worker exited".to_string()),
            (None, Some(reason)) if self.config.restart_workers && replaceable => {
                Error::BrokenPool(reason)
            }
            (None, Some(reason)) => {
                drop(st);
                self.break_pool(reason.clone());
                return Error::BrokenPool(reason);
            }
        };
        self.replace_if_needed(&mut st);
        error
    }

    /// Starts a worker if work is queued and fewer than `max_workers` will
    /// take it; with none left and none startable, breaks the pool.
    fn replace_if_needed(self: &Arc<Self>, st: &mut parking_lot::MutexGuard<'_, State>) {
        if self.jobs.is_empty() || st.broken.is_some() {
            return;
        }
        let live = st.workers.iter().filter(|w| !w.retiring()).count();
        if live >= self.config.max_workers {
            return;
        }
        if let Err(e) = spawn_worker(self, st) {
            if st.workers.is_empty() {
                parking_lot::MutexGuard::unlocked(st, || {
                    self.break_pool(format!("cannot replace a worker: {e}"));
                });
            }
        }
    }
}

impl Stop for Shared {
    fn stop(self: &Arc<Self>, options: Shutdown) {
        shutdown(self, options);
    }
}

/// Shuts the pool down when the last handle goes away.
type Owner = executor::Owner<Shared>;

/// A pool of worker processes running registered tasks, like Python's
/// `concurrent.futures.ProcessPoolExecutor`.
///
/// Workers are this executable started again (or
/// [`worker_command`](ProcessPoolBuilder::worker_command)); their `main`
/// must call [`init`](crate::init) first. Tasks are functions named with
/// [`task!`](crate::task!); arguments and results travel as postcard over
/// the workers' stdin and stdout. Workers start on demand, up to
/// `max_workers`.
///
/// A task that panics gives `Err(Error::Panicked)` and its worker goes on.
/// A worker that dies (exit, abort, signal) fails its futures, and by
/// default every pending one, with [`Error::BrokenPool`] naming the exit
/// code or signal and the last lines of its stderr; the pool is then broken
/// like Python's. With [`restart_workers`](ProcessPoolBuilder::restart_workers)
/// the worker is replaced instead and only the futures it held fail.
///
/// # Shutdown
///
/// [`shutdown`](ProcessPoolExecutor::shutdown) (and `Drop`) lets every
/// submitted task finish, then closes the workers' stdin and reaps them.
/// [`terminate_workers`](ProcessPoolExecutor::terminate_workers) and
/// [`kill_workers`](ProcessPoolExecutor::kill_workers) stop them at once.
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
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            config,
            jobs: rx,
            state: Mutex::new(State {
                sender: Some(tx),
                broken: None,
                workers: Vec::new(),
                threads: Vec::new(),
            }),
            outstanding: Arc::new(AtomicUsize::new(0)),
            seq: AtomicU64::new(0),
            joining: Mutex::new(()),
        });
        ProcessPoolExecutor {
            owner: Arc::new(Owner { shared }),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
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
        submit_encoded(&self.owner, task, false, |buf| encode_into(&arg, buf))
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
        };
        Map::new(
            Box::new(source),
            workers.saturating_mul(MAP_WINDOW_PER_WORKER),
        )
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
        shutdown(self.shared(), options);
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
        shutdown(
            shared,
            Shutdown {
                wait: false,
                cancel_futures: true,
            },
        );
        let workers = shared.state.lock().workers.clone();
        let fate = if kill {
            "killed by kill_workers()"
        } else {
            "terminated by terminate_workers()"
        };
        for w in workers {
            w.signal(fate, kill);
        }
        shutdown(shared, Shutdown::default());
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

    /// The process ids of the live workers.
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
            .map(|w| w.pid)
            .collect()
    }
}

/// Queues a job whose argument `encode` writes; the common path of submit
/// and map.
fn submit_encoded<A, R, V>(
    owner: &Arc<Owner>,
    task: Task<A, R>,
    chunk: bool,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
) -> Future<V>
where
    V: DeserializeOwned + Send + 'static,
{
    let (promise, future) = Promise::<V>::new();
    let mut payload = Vec::new();
    if let Err(e) = encode(&mut payload).and_then(|()| fits_a_frame(payload.len())) {
        let _ = promise.complete(Err(e));
        return future;
    }
    let shared = &owner.shared;
    shared.outstanding.fetch_add(1, Ordering::AcqRel);
    let job = Job {
        entry: task.entry(),
        chunk,
        payload,
        completion: Box::new(promise) as Box<dyn Completion>,
        ticket: Ticket(Arc::clone(&shared.outstanding)),
    };
    let mut st = shared.state.lock();
    let refusal = match (&st.sender, &st.broken) {
        (None, _) => Some(Error::Shutdown),
        (Some(_), Some(reason)) => Some(Error::BrokenPool(reason.clone())),
        (Some(_), None) => None,
    };
    if let Some(e) = refusal {
        drop(st);
        job.abandon(Some(e));
        return future;
    }
    let live = st.workers.iter().filter(|w| !w.retiring()).count();
    if live < shared.config.max_workers && shared.outstanding.load(Ordering::Acquire) > live {
        if let Err(e) = spawn_worker(shared, &mut st) {
            if st.workers.is_empty() {
                drop(st);
                job.abandon(Some(e));
                return future;
            }
        }
    }
    if let Some(tx) = &st.sender {
        // The receiver lives in `shared`: the send cannot fail.
        let _ = tx.send(job);
    }
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

/// Starts a worker process and its writer, reader and stderr threads.
fn spawn_worker(shared: &Arc<Shared>, st: &mut State) -> Result<(), Error> {
    join_finished(st);
    let launched = launch(&shared.config.command)?;
    let pid = launched.child.id();
    let (worker, stop) = Worker::new(pid, launched.child, launched.tail, launched.stderr_thread);
    let start = |name: &str, f: Box<dyn FnOnce() + Send>| {
        thread::Builder::new()
            .name(format!("concurrent-futures-{name}-{pid}"))
            .spawn(f)
    };
    let (s, w) = (Arc::clone(shared), Arc::clone(&worker));
    let stdin = launched.stdin;
    let writer = start("writer", Box::new(move || write_loop(s, w, stdin, stop)));
    let (s, w) = (Arc::clone(shared), Arc::clone(&worker));
    let stdout = launched.stdout;
    let reader = writer.and_then(|writer| {
        st.threads.push(writer);
        start("reader", Box::new(move || read_loop(s, w, stdout)))
    });
    match reader {
        Ok(reader) => {
            st.threads.push(reader);
            st.workers.push(worker);
            Ok(())
        }
        Err(e) => {
            worker.abandon_start();
            Err(Error::Io(format!("cannot start a pool thread: {e}")))
        }
    }
}

/// Joins the threads of workers that are gone. Without this a pool that
/// replaces workers (`max_tasks_per_child`, `restart_workers`) kept every
/// retired worker's three threads unjoined, with their stacks mapped,
/// until shutdown: about 26 KB and 6 memory maps per replacement, until
/// `vm.max_map_count` stopped new threads. The threads are finished, so the
/// joins do not block.
fn join_finished(st: &mut State) {
    let (finished, running) = std::mem::take(&mut st.threads)
        .into_iter()
        .partition::<Vec<_>, _>(JoinHandle::is_finished);
    st.threads = running;
    for t in finished {
        let _ = t.join();
    }
}

fn shutdown(shared: &Arc<Shared>, options: Shutdown) {
    let mut st = shared.state.lock();
    st.sender = None;
    drop(st);
    if options.cancel_futures {
        while let Ok(job) = shared.jobs.try_recv() {
            job.abandon(None);
        }
    }
    if !options.wait {
        return;
    }
    let me = thread::current().id();
    // From one of the pool's own threads (a done-callback, run by a worker's
    // reader, that drops or shuts down the pool) waiting would deadlock: that
    // worker cannot finish while its reader is blocked here. A later
    // shutdown or drop, from another thread, does the waiting.
    if shared
        .state
        .lock()
        .threads
        .iter()
        .any(|t| t.thread().id() == me)
    {
        return;
    }
    // Concurrent callers all wait until the joining is done.
    let _joining = shared.joining.lock();
    loop {
        let threads = std::mem::take(&mut shared.state.lock().threads);
        if threads.is_empty() {
            break;
        }
        for t in threads {
            let _ = t.join();
        }
    }
}

/// The input side of [`ProcessPoolExecutor::map`].
struct TaskSource<I, A: 'static, R: 'static> {
    items: I,
    task: Task<A, R>,
    owner: Arc<Owner>,
    auto_chunk: usize,
}

impl<I, A, R> Source<R> for TaskSource<I, A, R>
where
    I: Iterator<Item = A> + Send,
    A: Serialize + Send + 'static,
    R: DeserializeOwned + Send + 'static,
{
    fn submit_next(&mut self, chunksize: usize) -> Option<Submitted<R>> {
        if chunksize <= 1 {
            let item = self.items.next()?;
            Some(Submitted::One(submit_encoded(
                &self.owner,
                self.task,
                false,
                |b| encode_into(&item, b),
            )))
        } else {
            let chunk: Vec<A> = self.items.by_ref().take(chunksize).collect();
            if chunk.is_empty() {
                return None;
            }
            let n = chunk.len();
            Some(Submitted::Chunk(
                submit_encoded(&self.owner, self.task, true, |b| encode_into(&chunk, b)),
                n,
            ))
        }
    }

    fn default_chunksize(&self) -> usize {
        self.auto_chunk
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
                &st.workers.iter().map(|w| w.pid).collect::<Vec<_>>(),
            )
            .field("shutdown", &st.sender.is_none())
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
