//! Waiting on many futures: [`as_completed`] and [`wait`].
//!
//! Both register one shared [`Waiter`] with every pending future; a future
//! that completes pushes its index to the waiter and wakes it. The cost is
//! O(n) in the number of futures, with no polling loop.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};

use crate::future::Outcome;
use crate::{Error, Future};

/// Something that is or borrows a [`Future`]: `Future<T>`, `&Future<T>` or
/// `&mut Future<T>`, or a `(key, future)` pair of any of them.
/// [`as_completed`] and [`wait`] accept any of them and hand the same items
/// back, so you can pass futures by value (and call [`Future::result`] on
/// what comes back) or by reference (and keep them).
///
/// A pair is Python's `{executor.submit(load_url, url): url for url in URLS}`:
/// the key (a URL, an index) comes back with its future. A `HashMap<K,
/// Future<T>>` or a `Vec<(K, Future<T>)>` yields such pairs.
///
/// ```
/// use concurrent_futures::{as_completed, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(2)?;
/// let jobs: Vec<(&str, _)> = ["a", "bb"]
///     .into_iter()
///     .map(|word| (word, pool.submit(move || word.len())))
///     .collect();
/// for (word, fut) in as_completed(jobs) {
///     assert_eq!(fut.result()?, word.len());
/// }
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
///
/// # Examples
///
/// ```
/// use concurrent_futures::{as_completed, Future};
///
/// let futures = vec![Future::ready(Ok(1)), Future::ready(Ok(2))];
/// // By reference: the vector stays usable.
/// assert_eq!(as_completed(&futures).count(), 2);
/// // By value: each future can give up its result.
/// let sum: i32 = as_completed(futures).map(|f| f.result().unwrap()).sum();
/// assert_eq!(sum, 3);
/// ```
pub trait AsFuture {
    /// The future's value type.
    type Output;
    /// The future itself.
    fn as_future(&self) -> &Future<Self::Output>;

    /// True if no two items of this type can be the same future (owned or
    /// `&mut`: a `Future` is not `Clone`), so there is nothing to
    /// de-duplicate.
    #[doc(hidden)]
    const UNIQUE: bool = false;
}

impl<T> AsFuture for Future<T> {
    type Output = T;
    fn as_future(&self) -> &Future<T> {
        self
    }
    const UNIQUE: bool = true;
}

impl<T> AsFuture for &Future<T> {
    type Output = T;
    fn as_future(&self) -> &Future<T> {
        self
    }
}

impl<T> AsFuture for &mut Future<T> {
    type Output = T;
    fn as_future(&self) -> &Future<T> {
        self
    }
    const UNIQUE: bool = true;
}

impl<K, F: AsFuture> AsFuture for (K, F) {
    type Output = F::Output;
    fn as_future(&self) -> &Future<F::Output> {
        self.1.as_future()
    }
    // Pairs of owned futures (a `HashMap<K, Future<T>>`) are as unique as
    // the futures.
    const UNIQUE: bool = F::UNIQUE;
}

/// The shared rendezvous of one `as_completed` or `wait` call.
pub(crate) struct Waiter {
    state: Mutex<WaiterState>,
    cond: Condvar,
}

#[derive(Default)]
struct WaiterState {
    /// Indices of futures that completed since the last drain.
    ready: Vec<usize>,
    /// How many of them failed.
    failed: usize,
    waker: Option<Waker>,
}

impl Waiter {
    fn new() -> Arc<Self> {
        Arc::new(Waiter {
            state: Mutex::new(WaiterState::default()),
            cond: Condvar::new(),
        })
    }

    /// Called by a future when it completes.
    pub(crate) fn notify(&self, index: usize, outcome: Outcome) {
        let mut st = self.state.lock();
        st.ready.push(index);
        st.failed += usize::from(outcome.failed);
        let waker = st.waker.take();
        drop(st);
        self.cond.notify_one();
        if let Some(w) = waker {
            crate::panic::run_callback("a waker", || w.wake());
        }
    }
}

/// A cheap hasher for addresses (de-duplication of futures).
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }
}

type AddrSet = HashSet<usize, BuildHasherDefault<AddrHasher>>;

/// Collects the futures, dropping repeated ones (same shared state).
fn dedup<F: AsFuture>(futures: impl IntoIterator<Item = F>) -> Vec<F> {
    let iter = futures.into_iter();
    if F::UNIQUE {
        return iter.collect();
    }
    let mut seen = AddrSet::with_capacity_and_hasher(iter.size_hint().0, Default::default());
    iter.filter(|f| seen.insert(f.as_future().key())).collect()
}

/// Yields futures as they complete; see [`as_completed`].
///
/// An [`Iterator`] and a [`futures_core::Stream`] of the futures you passed
/// in. Futures already done come first; each future comes once. Dropping it
/// unregisters it from the futures still pending.
pub struct AsCompleted<F: AsFuture> {
    futures: Vec<Option<F>>,
    /// How many of `futures` have been looked at (yielded if done,
    /// registered with the waiter if not). The rest are examined as the
    /// iteration reaches them: one pass over the futures, each touched
    /// while its memory is in cache anyway.
    scanned: usize,
    ready: VecDeque<usize>,
    remaining: usize,
    waiter: Arc<Waiter>,
}

/// Returns an iterator over `futures` that yields each one as it completes.
///
/// Futures that are already done (finished or cancelled) are yielded first;
/// the others as they finish. A future passed several times is yielded once.
/// Yielded futures are not kept alive by the iterator. Add
/// [`.timeout(d)`](AsCompleted::timeout) to stop waiting after `d`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{as_completed, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(3)?;
/// let futures: Vec<_> = [300u64, 100, 200]
///     .into_iter()
///     .map(|ms| pool.submit(move || { std::thread::sleep(Duration::from_millis(ms)); ms }))
///     .collect();
/// // Printed in the order they finish: 100, 200, 300 (timing permitting).
/// let mut order = Vec::new();
/// for fut in as_completed(futures) {
///     let ms = fut.result()?;
///     println!("{ms} ms");
///     order.push(ms);
/// }
/// order.sort();
/// assert_eq!(order, [100, 200, 300]);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub fn as_completed<I>(futures: I) -> AsCompleted<I::Item>
where
    I: IntoIterator,
    I::Item: AsFuture,
{
    let futures = dedup(futures);
    AsCompleted {
        remaining: futures.len(),
        futures: futures.into_iter().map(Some).collect(),
        scanned: 0,
        ready: VecDeque::new(),
        waiter: Waiter::new(),
    }
}

impl<F: AsFuture> AsCompleted<F> {
    /// Stops waiting at `timeout` after this call: the iterator then yields
    /// `Err(Error::Timeout)` saying how many futures are unfinished, and ends.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{as_completed, Error, Promise, Future};
    ///
    /// let (_p, pending) = Promise::<u8>::new();
    /// let futures = vec![Future::ready(Ok(1)), pending];
    /// let mut it = as_completed(&futures).timeout(Duration::ZERO);
    /// assert!(it.next().unwrap().is_ok());
    /// assert_eq!(it.next().unwrap().unwrap_err(), Error::Timeout { unfinished: 1, total: 2 });
    /// assert!(it.next().is_none());
    /// ```
    pub fn timeout(self, timeout: Duration) -> AsCompletedTimeout<F> {
        AsCompletedTimeout {
            deadline: Instant::now().checked_add(timeout),
            inner: self,
            expired: false,
        }
    }

    /// Stops waiting at `deadline`; see [`timeout`](AsCompleted::timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// use concurrent_futures::{as_completed, Future};
    ///
    /// let futures = vec![Future::ready(Ok(1))];
    /// let done: Vec<_> = as_completed(futures).deadline(Instant::now()).collect();
    /// assert_eq!(done.len(), 1);
    /// ```
    pub fn deadline(self, deadline: Instant) -> AsCompletedTimeout<F> {
        AsCompletedTimeout {
            deadline: Some(deadline),
            inner: self,
            expired: false,
        }
    }

    /// How many futures have not been yielded yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{as_completed, Future};
    /// let mut it = as_completed(vec![Future::ready(Ok(1)), Future::ready(Ok(2))]);
    /// it.next();
    /// assert_eq!(it.remaining(), 1);
    /// ```
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    fn take(&mut self, index: usize) -> Option<F> {
        let f = self.futures.get_mut(index)?.take()?;
        self.remaining -= 1;
        Some(f)
    }

    /// The next future that has completed: one whose completion the waiter
    /// saw, else the first done one among those not looked at yet
    /// (registering the pending ones on the way). `None`: wait.
    fn next_ready(&mut self) -> Option<F> {
        while let Some(i) = self.ready.pop_front() {
            if let Some(f) = self.take(i) {
                return Some(f);
            }
        }
        while self.scanned < self.futures.len() {
            let i = self.scanned;
            self.scanned += 1;
            let done = self.futures[i]
                .as_ref()
                .is_some_and(|f| f.as_future().register_if_pending(&self.waiter, i));
            if done {
                return self.take(i);
            }
        }
        None
    }

    /// The next future, waiting until `deadline` (`None`: forever). `Err`
    /// means the deadline passed with futures still pending.
    fn next_until(&mut self, deadline: Option<Instant>) -> Result<Option<F>, ()> {
        loop {
            if let Some(f) = self.next_ready() {
                return Ok(Some(f));
            }
            if self.remaining == 0 {
                return Ok(None);
            }
            let mut st = self.waiter.state.lock();
            while st.ready.is_empty() {
                match deadline {
                    None => self.waiter.cond.wait(&mut st),
                    Some(d) => {
                        if self.waiter.cond.wait_until(&mut st, d).timed_out()
                            && st.ready.is_empty()
                        {
                            return Err(());
                        }
                    }
                }
            }
            self.ready.extend(st.ready.drain(..));
        }
    }
}

impl<F: AsFuture> Iterator for AsCompleted<F> {
    type Item = F;

    fn next(&mut self) -> Option<F> {
        self.next_until(None).unwrap_or(None)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<F: AsFuture> ExactSizeIterator for AsCompleted<F> {}

// The futures are never pinned in place: they live in a `Vec` we own.
impl<F: AsFuture> Unpin for AsCompleted<F> {}

impl<F: AsFuture> futures_core::Stream for AsCompleted<F> {
    type Item = F;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F>> {
        let this = self.get_mut();
        loop {
            if let Some(f) = this.next_ready() {
                return Poll::Ready(Some(f));
            }
            if this.remaining == 0 {
                return Poll::Ready(None);
            }
            // Cloned, and the replaced waker dropped, outside the lock: both
            // may run a runtime's code.
            let waker = cx.waker().clone();
            let mut st = this.waiter.state.lock();
            if st.ready.is_empty() {
                let replaced = st.waker.replace(waker);
                drop(st);
                drop(replaced);
                return Poll::Pending;
            }
            this.ready.extend(st.ready.drain(..));
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<F: AsFuture> Drop for AsCompleted<F> {
    fn drop(&mut self) {
        // Only the futures looked at can have registered the waiter.
        for f in self.futures[..self.scanned].iter().flatten() {
            f.as_future().unregister(&self.waiter);
        }
    }
}

impl<F: AsFuture> fmt::Debug for AsCompleted<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// [`AsCompleted`] with a deadline: yields `Ok(future)` in completion order,
/// then `Err(Error::Timeout)` once if the deadline passes first.
pub struct AsCompletedTimeout<F: AsFuture> {
    inner: AsCompleted<F>,
    deadline: Option<Instant>,
    expired: bool,
}

impl<F: AsFuture> Iterator for AsCompletedTimeout<F> {
    type Item = Result<F, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.expired {
            return None;
        }
        match self.inner.next_until(self.deadline) {
            Ok(f) => f.map(Ok),
            Err(()) => {
                self.expired = true;
                Some(Err(Error::Timeout {
                    unfinished: self.inner.remaining,
                    total: self.inner.futures.len(),
                }))
            }
        }
    }
}

impl<F: AsFuture> fmt::Debug for AsCompletedTimeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompletedTimeout")
            .field("remaining", &self.inner.remaining)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// When [`wait`] returns.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ReturnWhen;
/// assert_eq!(ReturnWhen::default(), ReturnWhen::AllCompleted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReturnWhen {
    /// When every future is done (finished, failed or cancelled).
    #[default]
    AllCompleted,
    /// When any future is done.
    FirstCompleted,
    /// When any future fails (finishes with an error other than being
    /// cancelled), or when all are done.
    FirstException,
}

/// Waits for `futures` and partitions them into `(done, not_done)`.
///
/// Returns when `return_when` is met or `timeout` passes (`None`: no
/// timeout), whichever is first; a timeout is not an error here, the
/// unfinished futures are simply in `not_done`. Cancelled futures count as
/// done. Repeated futures appear once. Both vectors keep the input order.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{wait, ReturnWhen, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new(2)?;
/// let futures: Vec<_> = (0..4).map(|i| pool.submit(move || i * 2)).collect();
/// let (done, not_done) = wait(futures, Some(Duration::from_secs(5)), ReturnWhen::AllCompleted);
/// assert_eq!(done.len(), 4);
/// assert!(not_done.is_empty());
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub fn wait<I>(
    futures: I,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> (Vec<I::Item>, Vec<I::Item>)
where
    I: IntoIterator,
    I::Item: AsFuture,
{
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let futures = dedup(futures);
    let total = futures.len();
    let mut done = 0usize;
    let mut failed = 0usize;
    for f in &futures {
        if let Some(o) = f.as_future().outcome_if_done() {
            done += 1;
            failed += usize::from(o.failed);
        }
    }
    let satisfied = |done: usize, failed: usize| match return_when {
        ReturnWhen::AllCompleted => done == total,
        ReturnWhen::FirstCompleted => done > 0 || total == 0,
        ReturnWhen::FirstException => failed > 0 || done == total,
    };
    if !satisfied(done, failed) {
        let waiter = Waiter::new();
        let mut registered = Vec::new();
        done = 0;
        failed = 0;
        for (i, f) in futures.iter().enumerate() {
            match f.as_future().register(&waiter, i) {
                Some(o) => {
                    done += 1;
                    failed += usize::from(o.failed);
                }
                None => registered.push(i),
            }
        }
        let mut st = waiter.state.lock();
        while !satisfied(done + st.ready.len(), failed + st.failed) {
            match deadline {
                None => waiter.cond.wait(&mut st),
                Some(d) => {
                    if waiter.cond.wait_until(&mut st, d).timed_out() {
                        break;
                    }
                }
            }
        }
        drop(st);
        for i in registered {
            futures[i].as_future().unregister(&waiter);
        }
    }
    futures
        .into_iter()
        .partition(|f| f.as_future().outcome_if_done().is_some())
}
