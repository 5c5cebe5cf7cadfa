//! `Promise<T>`, the producing side of a [`Future`], and `CancelHandle`.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use crate::future::{HeldBy, Holder, Inner};
use crate::{Error, Future};

/// Cancels a [`Future`] from another thread; see [`Future::cancel_handle`].
///
/// # Examples
///
/// ```
/// use concurrent_futures::Promise;
///
/// let (_promise, fut) = Promise::<()>::new();
/// let handle = fut.cancel_handle();
/// assert!(handle.clone().cancel());
/// assert!(fut.cancelled());
/// ```
#[derive(Clone)]
pub struct CancelHandle {
    inner: Arc<dyn Cancel>,
}

trait Cancel: Send + Sync {
    fn cancel(&self) -> bool;
}

/// A future's shared state, seen as something to cancel. (A second small
/// allocation, made only by [`Future::cancel_handle`]: the state itself is
/// unsized, so it cannot be turned into a `dyn Cancel` directly.)
struct Target<T>(Arc<Inner<T>>);

impl<T: Send> Cancel for Target<T> {
    fn cancel(&self) -> bool {
        Inner::cancel(&self.0)
    }
}

impl CancelHandle {
    pub(crate) fn new<T: Send + 'static>(inner: Arc<Inner<T>>) -> Self {
        CancelHandle {
            inner: Arc::new(Target(inner)),
        }
    }
}

impl CancelHandle {
    /// Same as [`Future::cancel`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Future;
    /// // A finished future cannot be cancelled.
    /// assert!(!Future::ready(Ok(1)).cancel_handle().cancel());
    /// ```
    pub fn cancel(&self) -> bool {
        self.inner.cancel()
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle").finish_non_exhaustive()
    }
}

/// The producing side of a [`Future`]: what an executor holds.
///
/// Pools use it internally; it is public so that you can write your own
/// executor (or adapt a callback API) and still hand out [`Future`]s that work
/// with [`as_completed`](crate::as_completed) and [`wait`](crate::wait).
/// Dropping a promise that was never completed fails its future with
/// [`Error::BrokenPool`], so a lost task can never leave a waiter hanging.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{Error, Promise};
///
/// let (promise, fut) = Promise::new();
/// assert!(promise.set_running());
/// assert!(fut.running());
/// assert!(promise.complete(Ok(10)).is_ok());
/// // A future completes once; a second completion is refused.
/// assert_eq!(promise.complete(Ok(11)), Err(Ok(11)));
/// assert_eq!(fut.result(), Ok(10));
/// # Ok::<(), Error>(())
/// ```
pub struct Promise<T> {
    inner: Arc<Inner<T>>,
    /// Set once `complete` succeeded, so that `Drop` need not take the lock.
    settled: Cell<bool>,
}

impl<T> Promise<T> {
    /// A new pending future and the promise that completes it.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    /// let (promise, fut) = Promise::new();
    /// std::thread::spawn(move || promise.complete(Ok("done")));
    /// assert_eq!(fut.result(), Ok("done"));
    /// ```
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> (Promise<T>, Future<T>) {
        Self::with_inner(Arc::new(Inner::with_job(())))
    }

    /// A promise whose future a worker may hold before it starts the task
    /// (see [`hold`](Self::hold)): a process pool's.
    pub(crate) fn holdable() -> (Promise<T>, Future<T>) {
        Self::with_inner(Arc::new(Inner::with_job(HeldBy::default())))
    }

    fn with_inner(inner: Arc<Inner<T>>) -> (Promise<T>, Future<T>) {
        (
            Promise {
                inner: Arc::clone(&inner),
                settled: Cell::new(false),
            },
            Future::from_inner(inner),
        )
    }

    /// Marks the future running, unless it was cancelled (then false: do not
    /// run the task). Like Python's `set_running_or_notify_cancel`.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    /// let (promise, fut) = Promise::<u8>::new();
    /// fut.cancel();
    /// assert!(!promise.set_running());
    /// ```
    pub fn set_running(&self) -> bool {
        self.inner.set_running()
    }

    /// Completes the future with `result` and runs its listeners.
    ///
    /// # Errors
    ///
    /// If the future is already done (finished or cancelled), the result is
    /// refused and handed back; the first outcome stays.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    /// let (promise, fut) = Promise::<u8>::new();
    /// fut.cancel();
    /// assert_eq!(promise.complete(Ok(1)), Err(Ok(1)));
    /// assert_eq!(fut.result(), Err(Error::Cancelled));
    /// ```
    pub fn complete(&self, result: Result<T, Error>) -> Result<(), Result<T, Error>> {
        self.complete_then(result, |_| {})
    }

    /// [`complete`](Promise::complete), calling `before_publish` while the
    /// result is stored but not yet visible to anyone, with whether any
    /// done-callback will run. A pool worker uses it to count itself idle
    /// before a caller woken by the result can submit again, but not when it
    /// is about to run user callbacks (they may wait for a task they submit).
    pub(crate) fn complete_then(
        &self,
        result: Result<T, Error>,
        before_publish: impl FnOnce(bool),
    ) -> Result<(), Result<T, Error>> {
        let done = self.inner.complete_then(result, before_publish);
        if done.is_ok() {
            self.settled.set(true);
        }
        done
    }

    /// Cancels the future if it has not started; see [`Future::cancel`].
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    /// let (promise, fut) = Promise::<u8>::new();
    /// assert!(promise.cancel());
    /// assert!(fut.cancelled());
    /// ```
    pub fn cancel(&self) -> bool {
        self.inner.cancel_now()
    }

    /// Marks the future held by a worker that has not started it.
    pub(crate) fn hold(&self, holder: &Arc<Holder>) -> bool {
        self.inner.hold(holder)
    }

    /// Back in the pool's queue: no longer held, pending again.
    pub(crate) fn release(&self) {
        self.inner.release();
    }

    /// Identifies the future to its [`Holder`].
    pub(crate) fn key(&self) -> usize {
        self.inner.key()
    }

    /// True once the future is done (for example cancelled by its holder).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    /// let (promise, fut) = Promise::<u8>::new();
    /// assert!(!promise.is_done());
    /// drop(fut.cancel());
    /// assert!(promise.is_done());
    /// ```
    pub fn is_done(&self) -> bool {
        self.inner.is_done()
    }
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        // Fast path: completed here. Otherwise fail the future, even if
        // its handle is gone: its done-callbacks must still run.
        if self.settled.get() {
            return;
        }
        let _ = self.complete(Err(Error::BrokenPool(
            "the task was dropped before it completed".to_string(),
        )));
    }
}

impl<T> fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise")
            .field("done", &self.is_done())
            .finish()
    }
}
