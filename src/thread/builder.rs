//! [`ThreadPoolBuilder`]: the options of a [`ThreadPoolExecutor`].

use std::fmt;
use std::sync::Arc;

use super::ThreadPoolExecutor;
use crate::Error;

/// The initializer as the workers hold it.
pub(crate) type Initializer = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What an initializer may return: `()`, or a `Result` whose `Err` breaks
/// the pool (its `Display` text becomes part of [`Error::BrokenPool`]).
///
/// # Examples
///
/// ```
/// use concurrent_futures::InitResult;
/// assert_eq!(().into_init_result(), Ok(()));
/// assert_eq!(Err::<(), _>("no config").into_init_result(), Err("no config".to_string()));
/// ```
pub trait InitResult {
    /// `Ok(())`, or the failure as text.
    fn into_init_result(self) -> Result<(), String>;
}

impl InitResult for () {
    fn into_init_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> InitResult for Result<(), E> {
    fn into_init_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// The number of threads a pool uses by default: `min(32, cpus + 4)`, as in
/// Python 3.8 and later.
pub(crate) fn default_thread_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus + 4).min(32)
}

/// The options of a [`ThreadPoolExecutor`], set by value and checked by
/// [`build`](ThreadPoolBuilder::build).
///
/// # Examples
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::builder()
///     .max_workers(3)
///     .thread_name_prefix("fetcher")
///     .stack_size(256 * 1024)
///     .initializer(|| println!("worker ready"))
///     .build()?;
/// let name = pool.submit(|| std::thread::current().name().map(String::from)).result()?;
/// assert_eq!(name.as_deref(), Some("fetcher_0"));
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
#[must_use = "a builder does nothing until .build() is called"]
pub struct ThreadPoolBuilder {
    pub(crate) max_workers: Option<usize>,
    pub(crate) thread_name_prefix: Option<String>,
    pub(crate) stack_size: Option<usize>,
    pub(crate) initializer: Option<Initializer>,
}

impl ThreadPoolBuilder {
    pub(crate) fn new() -> Self {
        ThreadPoolBuilder {
            max_workers: None,
            thread_name_prefix: None,
            stack_size: None,
            initializer: None,
        }
    }

    /// The most threads the pool starts (default `min(32, cpus + 4)`). Must
    /// be at least 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    /// assert!(matches!(ThreadPoolExecutor::builder().max_workers(0).build(),
    ///                  Err(Error::InvalidArgument(_))));
    /// ```
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Names the threads `{prefix}_{n}`, n counting from 0 (default prefix
    /// `ThreadPoolExecutor-{k}`, k numbering the pools of this process).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// let pool = ThreadPoolExecutor::builder().thread_name_prefix("io").build()?;
    /// let name = pool.submit(|| std::thread::current().name().unwrap().to_string()).result()?;
    /// assert_eq!(name, "io_0");
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name_prefix = Some(prefix.into());
        self
    }

    /// The stack size of each worker thread, in bytes (default: Rust's).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// let pool = ThreadPoolExecutor::builder().stack_size(8 << 20).build()?;
    /// assert_eq!(pool.submit(|| 1).result()?, 1);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Runs `f` in every worker thread before its first task. If it panics
    /// or returns `Err`, the pool is broken: every pending and later future
    /// fails with [`Error::BrokenPool`] naming the initializer.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{Error, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::builder()
    ///     .initializer(|| Err::<(), _>("database unreachable"))
    ///     .build()?;
    /// match pool.submit(|| 1).result() {
    ///     Err(Error::BrokenPool(why)) => assert!(why.contains("database unreachable")),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// # Ok::<(), Error>(())
    /// ```
    pub fn initializer<F, R>(mut self, f: F) -> Self
    where
        F: Fn() -> R + Send + Sync + 'static,
        R: InitResult,
    {
        self.initializer = Some(Arc::new(move || f().into_init_result()));
        self
    }

    /// Checks the options and creates the pool. No thread starts until the
    /// first task is submitted.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] if `max_workers` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    /// let pool = ThreadPoolExecutor::builder().max_workers(2).build()?;
    /// assert_eq!(pool.max_workers(), 2);
    /// assert_eq!(pool.num_threads(), 0);
    /// # Ok::<(), concurrent_futures::Error>(())
    /// ```
    pub fn build(self) -> Result<ThreadPoolExecutor, Error> {
        ThreadPoolExecutor::from_builder(self)
    }
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("max_workers", &self.max_workers)
            .field("thread_name_prefix", &self.thread_name_prefix)
            .field("stack_size", &self.stack_size)
            .field("initializer", &self.initializer.is_some())
            .finish()
    }
}
