//! The locks and thread parking that [`Future`](crate::Future), `as_completed`,
//! `wait` and the thread pool's queue are built on: parking_lot's and std's,
//! or loom's models of them under `cfg(loom)`, so that `tests/loom_future.rs`
//! can run the state machines through every interleaving. Both sides have
//! parking_lot's API: `lock()` returns the guard, `Condvar::wait(&mut guard)`,
//! `wait_until(&mut guard, deadline)`, `MutexGuard::unlocked(&mut guard, f)`;
//! and std's `current()`, `park()`, `park_timeout(d)`, `Thread::unpark()`
//! and `AtomicBool`. The process pool's queue and its workers' links use
//! them too, for the model of a writer's wake-up in
//! `src/process/loom_model.rs`.

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicBool;
#[cfg(not(loom))]
pub(crate) use std::thread::{current, park, park_timeout, Thread};

#[cfg(loom)]
pub(crate) use self::model::{park_timeout, Condvar, Mutex, MutexGuard};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicBool;
#[cfg(loom)]
pub(crate) use loom::thread::{current, park, Thread};

/// loom's `Mutex` and `Condvar` behind parking_lot's API.
///
/// loom does not model time: its timed waits never time out, so
/// [`Condvar::wait_until`] and [`park_timeout`] here are plain waits. Models
/// keep to the untimed paths.
#[cfg(loom)]
mod model {
    use std::ops::{Deref, DerefMut};
    use std::sync::PoisonError;
    use std::time::{Duration, Instant};

    /// A plain `park`: loom has no clock (see the module docs).
    pub(crate) fn park_timeout(_timeout: Duration) {
        loom::thread::park();
    }

    /// A mutex that loom schedules around. `T` may be unsized (the future's
    /// state ends in its type-erased job).
    pub(crate) struct Mutex<T: ?Sized>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
    }

    impl<T: ?Sized> Mutex<T> {
        /// The value, through the only reference there is: no locking.
        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard {
                mutex: self,
                inner: Some(self.0.lock().unwrap_or_else(PoisonError::into_inner)),
            }
        }
    }

    /// The guard; empty only while [`Condvar::wait`] or
    /// [`MutexGuard::unlocked`] has let go of the lock.
    pub(crate) struct MutexGuard<'a, T: ?Sized> {
        mutex: &'a Mutex<T>,
        inner: Option<loom::sync::MutexGuard<'a, T>>,
    }

    impl<T: ?Sized> MutexGuard<'_, T> {
        /// Runs `f` with the lock released, then takes it again.
        pub(crate) fn unlocked<U>(guard: &mut Self, f: impl FnOnce() -> U) -> U {
            drop(guard.inner.take());
            let out = f();
            guard.inner = Some(guard.mutex.0.lock().unwrap_or_else(PoisonError::into_inner));
            out
        }
    }

    impl<T: ?Sized> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.inner.as_deref().expect("guard held")
        }
    }

    impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.inner.as_deref_mut().expect("guard held")
        }
    }

    /// What a timed wait reports.
    pub(crate) struct WaitTimeoutResult(bool);

    impl WaitTimeoutResult {
        pub(crate) fn timed_out(&self) -> bool {
            self.0
        }
    }

    /// A condition variable that loom schedules around.
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.inner.take().expect("guard held");
            guard.inner = Some(self.0.wait(inner).unwrap_or_else(PoisonError::into_inner));
        }

        /// A plain wait: loom has no clock (see the module docs).
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            _deadline: Instant,
        ) -> WaitTimeoutResult {
            self.wait(guard);
            WaitTimeoutResult(false)
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }
}
