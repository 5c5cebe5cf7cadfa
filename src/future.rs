//! `Future<T>`: the handle to a result that a pool will produce. Its shared
//! state, the state machine drawn, is in `future/state.rs`.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::sync::{self, MutexGuard};

use crate::panic::run_callback;
use crate::wait::Waiter;
use crate::{CancelHandle, Error};

mod state;

use state::{Guard, Listener, Phase};
pub(crate) use state::{HeldBy, Holder, Inner, Outcome};

/// The handle to the result of a task.
///
/// Returned by [`ThreadPoolExecutor::submit`](crate::ThreadPoolExecutor::submit)
/// and [`ProcessPoolExecutor::submit`](crate::ProcessPoolExecutor::submit).
/// Block on it with [`result`](Future::result), poll it with
/// [`done`](Future::done), or `.await` it: it implements
/// [`std::future::Future`] with `Output = Result<T, Error>`.
///
/// A `Future` is `Send + Sync` when `T: Send`. It is not `Clone`: its value
/// moves out exactly once. Dropping it does not cancel the task; use
/// [`cancel`](Future::cancel) or a [`CancelHandle`] for that.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::new(2)?;
/// let fut = pool.submit(|| 6 * 7);
/// assert_eq!(fut.result()?, 42);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
pub struct Future<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Future<T> {
    /// A future that is already finished with `result`.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Future};
    ///
    /// let ok = Future::ready(Ok(3));
    /// assert!(ok.done());
    /// assert_eq!(ok.result(), Ok(3));
    /// let failed: Future<u8> = Future::ready(Err(Error::Shutdown));
    /// assert_eq!(failed.result(), Err(Error::Shutdown));
    /// ```
    pub fn ready(result: Result<T, Error>) -> Future<T> {
        Future {
            inner: Arc::new(Inner::finished(result)),
        }
    }

    /// Blocks until the task is done and returns its outcome: the value,
    /// [`Error::Cancelled`], or the task's error.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`] if the future was cancelled; the task's error
    /// (for example [`Error::Panicked`]) if it failed;
    /// [`Error::AlreadyTaken`] if [`result_timeout`](Future::result_timeout)
    /// already moved the value out.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// assert_eq!(pool.submit(|| "hello".to_uppercase()).result()?, "HELLO");
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn result(mut self) -> Result<T, Error> {
        self.take_result(None)
    }

    /// Like [`result`](Future::result), giving up after `timeout`.
    ///
    /// On [`Error::Timeout`] the future stays pending and can be waited on
    /// again; on success the value moves out (a later call gives
    /// [`Error::AlreadyTaken`]).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the task is not done in time, else as
    /// [`result`](Future::result).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let mut fut = pool.submit(move || rx.recv().is_ok());
    /// assert_eq!(fut.result_timeout(Duration::ZERO), Err(Error::timeout()));
    /// tx.send(()).unwrap();
    /// assert_eq!(fut.result_timeout(Duration::from_secs(5)), Ok(true));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn result_timeout(&mut self, timeout: Duration) -> Result<T, Error> {
        self.take_result(Instant::now().checked_add(timeout))
    }

    /// Like [`result`](Future::result), giving up at `deadline`.
    ///
    /// # Errors
    ///
    /// As [`result_timeout`](Future::result_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// let mut fut = pool.submit(|| 1 + 1);
    /// assert_eq!(fut.result_deadline(Instant::now() + Duration::from_secs(5)), Ok(2));
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn result_deadline(&mut self, deadline: Instant) -> Result<T, Error> {
        self.take_result(Some(deadline))
    }

    fn take_result(&mut self, deadline: Option<Instant>) -> Result<T, Error> {
        // The only handle left on a done future (the pool has let go of it,
        // as of every finished future `as_completed` yields): nobody else
        // can reach the state, so it is read without the lock's two atomic
        // operations.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            let phase = &mut inner.state.get_mut().phase;
            if phase.is_done() {
                return take_phase(phase);
            }
        }
        let mut st = self.inner.state.lock();
        if !self.wait_locked(&mut st, deadline) {
            return Err(Error::timeout());
        }
        take_phase(&mut st.phase)
    }

    /// Blocks until done or `deadline`; true if done. The thread waits as
    /// one of the listeners (woken by `unpark`) and takes itself off the
    /// list if it gives up.
    fn wait_locked(&self, st: &mut Guard<'_, T>, deadline: Option<Instant>) -> bool {
        if st.is_done() {
            return true;
        }
        let me = sync::current();
        let id = me.id();
        st.phase.push(Listener::Thread(me));
        loop {
            // `park` may return early (a stale token, or none at all): the
            // state is checked again either way.
            let expired = MutexGuard::unlocked(st, || match deadline {
                None => {
                    sync::park();
                    false
                }
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        sync::park_timeout(left);
                        false
                    }
                    _ => true,
                },
            });
            if st.is_done() {
                return true;
            }
            if expired {
                st.phase
                    .remove_where(|l| matches!(l, Listener::Thread(t) if t.id() == id));
                return false;
            }
        }
    }

    /// Blocks until the future is done (finished or cancelled).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// let fut = pool.submit(|| ());
    /// fut.wait();
    /// assert!(fut.done());
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn wait(&self) {
        let mut st = self.inner.state.lock();
        self.wait_locked(&mut st, None);
    }

    /// Blocks until the future is done or `timeout` passes; true if done.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// let fut = pool.submit(|| ());
    /// assert!(fut.wait_timeout(Duration::from_secs(5)));
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_deadline_opt(Instant::now().checked_add(timeout))
    }

    /// Blocks until the future is done or `deadline` passes; true if done.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// let fut = pool.submit(|| ());
    /// assert!(fut.wait_deadline(Instant::now() + Duration::from_secs(5)));
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.wait_deadline_opt(Some(deadline))
    }

    fn wait_deadline_opt(&self, deadline: Option<Instant>) -> bool {
        let mut st = self.inner.state.lock();
        self.wait_locked(&mut st, deadline)
    }

    /// True once the future is finished or cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Future;
    /// assert!(Future::ready(Ok(1)).done());
    /// ```
    pub fn done(&self) -> bool {
        self.inner.state.lock().is_done()
    }

    /// True while a worker is running the task.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Future;
    /// assert!(!Future::ready(Ok(1)).running());
    /// ```
    pub fn running(&self) -> bool {
        matches!(self.inner.state.lock().phase, Phase::Running(_))
    }

    /// True if the future was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::Promise;
    ///
    /// let (_promise, fut) = Promise::<u8>::new();
    /// assert!(fut.cancel());
    /// assert!(fut.cancelled());
    /// ```
    pub fn cancelled(&self) -> bool {
        matches!(self.inner.state.lock().phase, Phase::Cancelled)
    }

    /// Cancels the task if it has not started.
    ///
    /// Returns true if the future is now cancelled (it was pending, or was
    /// already cancelled); false if the task is running or finished. A
    /// successful cancel wakes every waiter and runs the done-callbacks.
    ///
    /// On a process pool, a task may be pending in a worker that holds it
    /// behind the task it runs. Only the worker knows whether it has
    /// started it by now, so `cancel` asks it and waits for its answer (one
    /// round trip): true if the worker gave the task back (it never runs),
    /// false if it had started. From a done-callback running on one of the
    /// pool's own threads it cannot wait, and returns false for such a task.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let blocker = pool.submit(move || rx.recv().is_ok());
    /// let queued = pool.submit(|| 1);
    /// assert!(queued.cancel());
    /// assert_eq!(queued.result(), Err(Error::Cancelled));
    /// tx.send(()).unwrap();
    /// assert_eq!(blocker.result(), Ok(true));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn cancel(&self) -> bool {
        self.inner.cancel()
    }

    /// The task's error, blocking until it is done: `None` on success,
    /// `Some(Error::Cancelled)` if cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Future};
    ///
    /// assert_eq!(Future::ready(Ok(1)).exception(), None);
    /// let f: Future<u8> = Future::ready(Err(Error::Shutdown));
    /// assert_eq!(f.exception(), Some(Error::Shutdown));
    /// ```
    pub fn exception(&self) -> Option<Error> {
        let mut st = self.inner.state.lock();
        self.wait_locked(&mut st, None);
        phase_error(&st.phase)
    }

    /// Like [`exception`](Future::exception), giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if the future is not done in time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::Future;
    ///
    /// assert_eq!(Future::ready(Ok(1)).exception_timeout(Duration::ZERO), Ok(None));
    /// ```
    pub fn exception_timeout(&self, timeout: Duration) -> Result<Option<Error>, Error> {
        let mut st = self.inner.state.lock();
        if !self.wait_locked(&mut st, Instant::now().checked_add(timeout)) {
            return Err(Error::timeout());
        }
        Ok(phase_error(&st.phase))
    }

    /// Calls `callback` once the future is done, with the future itself.
    ///
    /// The callback runs exactly once: in the thread that completes or
    /// cancels the future, or at once in this thread if it is already done.
    /// A panicking callback is reported as a `tracing` error event (target
    /// `concurrent_futures`; silent without a subscriber); the other
    /// callbacks still run and the worker survives.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// let fut = pool.submit(|| 5);
    /// fut.add_done_callback(move |f| tx.send(f.exception().is_none()).unwrap());
    /// assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)), Ok(true));
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(&Future<T>) + Send + 'static,
    {
        let mut st = self.inner.state.lock();
        if st.is_done() {
            drop(st);
            run_callback("a done callback", || callback(self));
        } else {
            st.phase.push(Listener::Callback(Box::new(callback)));
        }
    }

    /// A handle that can cancel this future from anywhere, even while
    /// another thread blocks in [`result`](Future::result).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, Promise};
    ///
    /// let (_promise, fut) = Promise::<u8>::new();
    /// let handle = fut.cancel_handle();
    /// let waiter = std::thread::spawn(move || fut.result());
    /// assert!(handle.cancel());
    /// assert_eq!(waiter.join().unwrap(), Err(Error::Cancelled));
    /// ```
    pub fn cancel_handle(&self) -> CancelHandle
    where
        T: Send + 'static,
    {
        CancelHandle::new(Arc::clone(&self.inner))
    }

    /// The consumer's handle on shared state a [`Promise`] produces.
    pub(crate) fn from_inner(inner: Arc<Inner<T>>) -> Self {
        Future { inner }
    }

    /// Registers an `as_completed`/`wait` waiter; true if already done (then
    /// nothing is registered).
    pub(crate) fn register(&self, waiter: &Arc<Waiter>, index: usize) -> Option<Outcome> {
        let mut st = self.inner.state.lock();
        if st.is_done() {
            Some(st.phase.outcome())
        } else {
            st.phase.push(Listener::Waiter(Arc::clone(waiter), index));
            None
        }
    }

    /// Like [`register`](Future::register), for `as_completed`, which needs
    /// no outcome: true if the future is already done. A handle alone on
    /// the state is done without a look under the lock: the producer (its
    /// pool's task or its `Promise`) completes the future before it lets go
    /// of the state, and a dropped one fails it.
    pub(crate) fn register_if_pending(&self, waiter: &Arc<Waiter>, index: usize) -> bool {
        if Arc::strong_count(&self.inner) == 1 {
            // Pairs with the producer's release decrement of the count:
            // whatever it did before (completing) is visible from here on.
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            return true;
        }
        self.register(waiter, index).is_some()
    }

    /// Removes a waiter registered by [`register`](Future::register).
    pub(crate) fn unregister(&self, waiter: &Arc<Waiter>) {
        let mut st = self.inner.state.lock();
        st.phase
            .remove_where(|l| matches!(l, Listener::Waiter(w, _) if Arc::ptr_eq(w, waiter)));
    }

    /// An address identifying the shared state (for de-duplication).
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.inner).cast::<()>() as usize
    }

    pub(crate) fn outcome_if_done(&self) -> Option<Outcome> {
        let st = self.inner.state.lock();
        st.is_done().then(|| st.phase.outcome())
    }
}

/// The outcome of a done future, moving a value out (leaving `Taken`).
fn take_phase<T>(phase: &mut Phase<T>) -> Result<T, Error> {
    match std::mem::replace(phase, Phase::Taken) {
        Phase::Finished(Ok(v)) => Ok(v),
        Phase::Finished(Err(e)) => {
            let err = (*e).clone();
            *phase = Phase::Finished(Err(e));
            Err(err)
        }
        Phase::Cancelled => {
            *phase = Phase::Cancelled;
            Err(Error::Cancelled)
        }
        Phase::Taken => Err(Error::AlreadyTaken),
        // Not reached: callers take only from a done future.
        pending @ (Phase::Pending(_) | Phase::Running(_)) => {
            *phase = pending;
            Err(Error::timeout())
        }
    }
}

fn phase_error<T>(phase: &Phase<T>) -> Option<Error> {
    match phase {
        Phase::Finished(Err(e)) => Some((**e).clone()),
        Phase::Cancelled => Some(Error::Cancelled),
        _ => None,
    }
}

impl<T> fmt::Debug for Future<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.inner.state.lock().phase {
            Phase::Pending(_) => "pending",
            Phase::Running(_) => "running",
            Phase::Cancelled => "cancelled",
            Phase::Finished(Ok(_)) | Phase::Taken => "finished",
            Phase::Finished(Err(_)) => "failed",
        };
        f.debug_struct("Future").field("state", &state).finish()
    }
}

impl<T> std::future::Future for Future<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The waker is cloned, and the one it replaces dropped, outside the
        // lock: both may run a runtime's code.
        let waker = cx.waker().clone();
        let replaced;
        {
            let mut st = self.inner.state.lock();
            if st.is_done() {
                drop(st);
                return Poll::Ready(self.get_mut().take_result(None));
            }
            // Replace our waker if we polled before, else add it.
            let mut node = st.phase.listeners().and_then(|l| l.as_deref_mut());
            let mut slot = None;
            while let Some(n) = node {
                if let Listener::Waker(w) = &mut n.listener {
                    slot = Some(w);
                    break;
                }
                node = n.next.as_deref_mut();
            }
            replaced = match slot {
                Some(w) => Some(std::mem::replace(w, waker)),
                None => {
                    st.phase.push(Listener::Waker(waker));
                    None
                }
            };
        }
        drop(replaced);
        Poll::Pending
    }
}
