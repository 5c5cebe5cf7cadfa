//! `Map<'a, T>`: the ordered, lazy result iterator of `map` on either pool.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::{Error, Future};

/// One submitted task of a map: a single item, or a chunk of items.
pub(crate) enum Submitted<T> {
    One(Future<T>),
    /// A chunk's future and how many items it carries.
    Chunk(Future<Vec<T>>, usize),
}

impl<T> Submitted<T> {
    fn cancel(&self) {
        match self {
            Submitted::One(f) => f.cancel(),
            Submitted::Chunk(f, _) => f.cancel(),
        };
    }
}

/// How many tasks a `map` keeps in flight per worker by default, on either
/// pool (on the process pool a task is a chunk of items).
pub(crate) const MAP_WINDOW_PER_WORKER: usize = 4;

/// The default window of a `map` on `workers` workers:
/// [`MAP_WINDOW_PER_WORKER`] tasks each, and at least `min`.
pub(crate) fn default_window(workers: usize, min: usize) -> usize {
    workers.saturating_mul(MAP_WINDOW_PER_WORKER).max(min)
}

/// The single-item/chunk split of a map's input, for every [`Source`]: with
/// `chunksize` 1 (or less) pulls one item and submits it with `one`; else
/// pulls up to `chunksize` items and submits them as one task with `chunk`.
/// `None` once `items` is exhausted.
pub(crate) fn submit_next<A, T>(
    items: &mut impl Iterator<Item = A>,
    chunksize: usize,
    one: impl FnOnce(A) -> Future<T>,
    chunk: impl FnOnce(Vec<A>) -> Future<Vec<T>>,
) -> Option<Submitted<T>> {
    if chunksize <= 1 {
        let item = items.next()?;
        return Some(Submitted::One(one(item)));
    }
    let pulled: Vec<A> = items.by_ref().take(chunksize).collect();
    if pulled.is_empty() {
        return None;
    }
    let n = pulled.len();
    Some(Submitted::Chunk(chunk(pulled), n))
}

/// What a pool gives a [`Map`]: pulls items from the input and submits them.
pub(crate) trait Source<T>: Send {
    /// Pulls up to `chunksize` items and submits them as one task; `None`
    /// once the input is exhausted.
    fn submit_next(&mut self, chunksize: usize) -> Option<Submitted<T>>;

    /// The chunk size to use when the caller sets none.
    fn default_chunksize(&self) -> usize {
        1
    }

    /// Called after a run of `submit_next` calls: a source that held back
    /// waking its workers while it submitted wakes them now.
    fn flush(&mut self) {}
}

/// Where the iterator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing pulled yet; options may still change.
    Fresh,
    /// Pulling and yielding.
    Running,
    /// Yielded its last item or an error; yields nothing more.
    Finished,
}

/// The results of `map`, in input order.
///
/// An `Iterator<Item = Result<T, Error>>`. It is lazy: nothing is pulled
/// from the input or submitted until the first `next()`, and then at most
/// [`buffersize`](Map::buffersize) tasks are in flight (plus the one being
/// waited for), so an endless input runs in bounded memory.
///
/// A failed task yields its `Err` at its position and ends the iteration;
/// the tasks still queued are cancelled. Dropping the iterator cancels what
/// has not started.
///
/// The input is pulled on the thread that iterates the map, so it may
/// borrow from the caller: `'a` is the input iterator's lifetime. Only the
/// items themselves move into the tasks (and must be `'static`).
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::new(2)?;
/// let words = vec![String::from("a"), String::from("bb")];
/// let lens: Vec<usize> = pool.map(|w: String| w.len(), words.iter().cloned())
///     .collect::<Result<_, _>>()?;
/// assert_eq!(lens, [1, 2]);
/// assert_eq!(words.len(), 2); // still ours
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::new(4)?;
/// let squares: Vec<u64> = pool
///     .map(|x: u64| x * x, 1..=5)
///     .buffersize(8)
///     .timeout(Duration::from_secs(10))
///     .collect::<Result<_, _>>()?;
/// assert_eq!(squares, [1, 4, 9, 16, 25]);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub struct Map<'a, T> {
    source: Box<dyn Source<T> + 'a>,
    window: VecDeque<Submitted<T>>,
    current: Option<std::vec::IntoIter<T>>,
    buffersize: usize,
    chunksize: Option<usize>,
    created: Instant,
    deadline: Option<Instant>,
    stage: Stage,
    exhausted: bool,
    invalid: Option<Error>,
}

impl<'a, T> Map<'a, T> {
    pub(crate) fn new(source: Box<dyn Source<T> + 'a>, buffersize: usize) -> Map<'a, T> {
        Map {
            source,
            window: VecDeque::new(),
            current: None,
            buffersize: buffersize.max(1),
            chunksize: None,
            created: Instant::now(),
            deadline: None,
            stage: Stage::Fresh,
            exhausted: false,
            invalid: None,
        }
    }

    /// Gives up `timeout` after the `map` call (not after this call, nor per
    /// item): an item not ready by then yields `Err(Error::Timeout)`, the
    /// remaining tasks are cancelled and the iterator ends.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// let mut it = pool
    ///     .map(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), [0, 2_000])
    ///     .timeout(Duration::from_millis(200));
    /// assert_eq!(it.next(), Some(Ok(())));
    /// assert!(it.next().unwrap().unwrap_err().is_timeout());
    /// assert_eq!(it.next(), None);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.deadline = self.created.checked_add(timeout);
        self
    }

    /// How many tasks may be in flight ahead of the consumer (default: 4
    /// per worker, and at least 256 on the thread pool; on the process pool
    /// a task is a chunk of items). Must be at least 1; 0 makes
    /// the iterator yield `Err(Error::InvalidArgument)` and end.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(2)?;
    /// // An endless input is fine: only 2 items are pulled ahead.
    /// let first: Vec<u64> = pool.map(|x: u64| x, 0..).buffersize(2).take(3)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 2]);
    /// assert!(matches!(pool.map(|x: u8| x, [1]).buffersize(0).next(),
    ///                  Some(Err(Error::InvalidArgument(_)))));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn buffersize(mut self, n: usize) -> Self {
        if n == 0 {
            self.refuse("buffersize must be at least 1");
        } else {
            self.buffersize = n;
        }
        self
    }

    /// How many items travel as one task (default: 1 on the thread pool,
    /// chosen from the input's size on the process pool). Must be at least 1;
    /// 0 makes the iterator yield `Err(Error::InvalidArgument)` and end.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(2)?;
    /// let v: Vec<u32> = pool.map(|x: u32| x + 1, 0..10).chunksize(3).collect::<Result<_, _>>()?;
    /// assert_eq!(v, (1..11).collect::<Vec<_>>());
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn chunksize(mut self, n: usize) -> Self {
        if n == 0 {
            self.refuse("chunksize must be at least 1");
        } else {
            self.chunksize = Some(n);
        }
        self
    }

    fn refuse(&mut self, why: &str) {
        if self.stage == Stage::Fresh && self.invalid.is_none() {
            self.invalid = Some(Error::InvalidArgument(why.to_string()));
        }
    }

    /// Submits until `want` tasks are in the window or the input ends.
    fn fill(&mut self, want: usize) {
        let chunk = self
            .chunksize
            .unwrap_or_else(|| self.source.default_chunksize());
        while !self.exhausted && self.window.len() < want {
            match self.source.submit_next(chunk) {
                Some(s) => self.window.push_back(s),
                None => self.exhausted = true,
            }
        }
        self.source.flush();
    }

    /// Ends the iteration, cancelling every task not yet started.
    fn finish(&mut self) {
        self.stage = Stage::Finished;
        self.current = None;
        for s in self.window.drain(..) {
            s.cancel();
        }
    }

    fn fail(&mut self, e: Error) -> Option<Result<T, Error>> {
        self.finish();
        Some(Err(e))
    }
}

impl<T> Iterator for Map<'_, T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.stage {
            Stage::Finished => return None,
            Stage::Fresh => {
                self.stage = Stage::Running;
                if let Some(e) = self.invalid.take() {
                    return self.fail(e);
                }
            }
            Stage::Running => {}
        }
        if let Some(v) = self.current.as_mut().and_then(Iterator::next) {
            return Some(Ok(v));
        }
        self.current = None;
        // Keep `buffersize` tasks in flight behind the one we wait for.
        self.fill(self.buffersize.saturating_add(1));
        let Some(front) = self.window.pop_front() else {
            self.finish();
            return None;
        };
        let outcome = match front {
            Submitted::One(f) => settle(f, self.deadline),
            Submitted::Chunk(f, sent) => match settle(f, self.deadline) {
                // A worker in another language could answer a chunk with a
                // wrong count, which would shift every later result.
                Ok(values) if values.len() != sent => Err(Error::Protocol(format!(
                    "a chunk of {sent} items came back with {} results",
                    values.len()
                ))),
                Ok(values) => {
                    let mut it = values.into_iter();
                    let first = it.next();
                    self.current = Some(it);
                    match first {
                        Some(v) => Ok(v),
                        // An empty chunk: nothing to yield here, go on.
                        None => return self.next(),
                    }
                }
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(v) => Some(Ok(v)),
            Err(e) => self.fail(e),
        }
    }
}

/// Waits for a task of the map until `deadline`; on timeout the task is
/// cancelled (if it has not started) since nobody will ask for it again.
fn settle<V>(mut f: Future<V>, deadline: Option<Instant>) -> Result<V, Error> {
    match deadline {
        None => f.result(),
        Some(d) => {
            let r = f.result_deadline(d);
            if r.as_ref().is_err_and(Error::is_timeout) {
                f.cancel();
            }
            r
        }
    }
}

impl<T> Drop for Map<'_, T> {
    fn drop(&mut self) {
        for s in self.window.drain(..) {
            s.cancel();
        }
    }
}

impl<T> fmt::Debug for Map<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.window.len())
            .field("buffersize", &self.buffersize)
            .field("chunksize", &self.chunksize)
            .field("deadline", &self.deadline)
            .field("finished", &(self.stage == Stage::Finished))
            .finish()
    }
}
