//! `Task<A, R>`: a function registered by name, runnable on either pool.
//!
//! [`task!`](crate::task!) places a `static` describing the function into a
//! link-time slice ([`linkme`]), so every binary carries a table of the tasks
//! it names. A worker process looks tasks up in that table by name; no code
//! address ever crosses a pipe.

use std::fmt;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

#[doc(hidden)]
pub use linkme;

use crate::Error;

/// A function of any arity from 0 to 6, seen as taking one argument.
///
/// Implemented for every `Fn(A) -> R` (argument `A`) and every
/// `Fn(A, B, ..) -> R` of 0 or 2 to 6 arguments (argument: the tuple).
/// [`task!`](crate::task!) uses it so that `fn square(x: u64) -> u64` becomes
/// a `Task<u64, u64>` and `fn add(a: u64, b: u64) -> u64` a
/// `Task<(u64, u64), u64>`. `Marker` only keeps the two families apart
/// ([`Single`] or [`Spread`]); it is always inferred.
///
/// # Examples
///
/// ```
/// use concurrent_futures::TaskFn;
/// fn add(a: u64, b: u64) -> u64 { a + b }
/// fn square(x: u64) -> u64 { x * x }
/// assert_eq!(TaskFn::call(&add, (2, 3)), 5);
/// assert_eq!(TaskFn::call(&square, 4), 16);
/// ```
pub trait TaskFn<Args, Marker>: Send + Sync + 'static {
    /// The function's return type.
    type Output;
    /// Calls the function (a tuple is spread out into the arguments).
    fn call(&self, args: Args) -> Self::Output;
}

/// [`TaskFn`] marker: a function of one argument.
#[derive(Debug)]
pub enum Single {}

/// [`TaskFn`] marker: a function of 0 or 2 to 6 arguments, taking a tuple.
#[derive(Debug)]
pub enum Spread {}

impl<Func, Ret, A> TaskFn<A, Single> for Func
where
    Func: Fn(A) -> Ret + Send + Sync + 'static,
{
    type Output = Ret;
    fn call(&self, arg: A) -> Ret {
        self(arg)
    }
}

macro_rules! task_fn_arity {
    ($($a:ident),*) => {
        impl<Func, Ret, $($a,)*> TaskFn<($($a,)*), Spread> for Func
        where
            Func: Fn($($a),*) -> Ret + Send + Sync + 'static,
        {
            type Output = Ret;
            #[allow(non_snake_case, clippy::unused_unit)]
            fn call(&self, ($($a,)*): ($($a,)*)) -> Ret {
                self($($a),*)
            }
        }
    };
}

task_fn_arity!();
task_fn_arity!(A1, A2);
task_fn_arity!(A1, A2, A3);
task_fn_arity!(A1, A2, A3, A4);
task_fn_arity!(A1, A2, A3, A4, A5);
task_fn_arity!(A1, A2, A3, A4, A5, A6);

/// A typed call through a leaked zero-sized function value.
trait Call<A, R>: Send + Sync {
    fn call(&self, arg: A) -> R;
}

struct Wrap<F, M>(F, PhantomData<fn() -> M>);

impl<F, M, A, R> Call<A, R> for Wrap<F, M>
where
    F: TaskFn<A, M, Output = R>,
{
    fn call(&self, arg: A) -> R {
        self.0.call(arg)
    }
}

/// The type-erased view of a registered task that a worker process uses.
#[doc(hidden)]
pub trait ErasedTask: Sync {
    /// The name the task is looked up by.
    fn name(&self) -> String;
    /// Its argument and result types, to catch mismatched builds.
    fn signature(&self) -> String;
    /// Decodes one argument, calls the task, appends the encoded result.
    fn invoke(&self, arg: &[u8], out: &mut Vec<u8>) -> Result<(), Error>;
    /// Decodes a `Vec` of arguments, calls the task on each, appends the
    /// encoded `Vec` of results.
    fn invoke_chunk(&self, args: &[u8], out: &mut Vec<u8>) -> Result<(), Error>;
}

/// Every task named by [`task!`](crate::task!) in this binary.
#[doc(hidden)]
#[linkme::distributed_slice]
pub static TASKS: [&'static dyn ErasedTask];

/// The registry entry `task!` builds; public only for the macro.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct TaskEntry<F, Args, M> {
    f: F,
    site: &'static str,
    _args: PhantomData<fn(Args) -> M>,
}

impl<F, Args, M> TaskEntry<F, Args, M> {
    /// Used by `task!` in a `static` initializer.
    pub const fn new(f: F, site: &'static str) -> Self
    where
        F: TaskFn<Args, M>,
    {
        // A task is named by its type, so that type must be the function
        // itself: a function item or a non-capturing closure, never a `fn`
        // pointer (all pointers of one signature share a type, and a worker
        // could not tell them apart). Checked when the `static` is built.
        assert!(
            std::mem::size_of::<F>() == 0,
            "task! takes a function path or a non-capturing closure, not a fn pointer"
        );
        TaskEntry {
            f,
            site,
            _args: PhantomData,
        }
    }
}

/// The stable name of a task: the function's path, or `closure@file:line:col`.
fn task_name<F>(site: &str) -> String {
    let name = std::any::type_name::<F>();
    if name.contains("{{closure}}") {
        format!("closure@{site}")
    } else {
        name.to_string()
    }
}

/// Appends `value`, postcard-encoded, to `out`. On error (not on a panic
/// in a `Serialize` impl) `out` is left empty: callers write their frame
/// afresh.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    match postcard::serialize_with_flavor(value, Append(out)) {
        Ok(()) => Ok(()),
        Err(e) => {
            out.clear();
            // postcard's error hides a `Serialize` impl's own message.
            let why = crate::ser_message::custom_message(value).unwrap_or_else(|| e.to_string());
            Err(Error::Codec(format!(
                "cannot serialize {}: {why}",
                std::any::type_name::<T>()
            )))
        }
    }
}

/// postcard's output into a `Vec` we keep. Its own `Vec` flavors copy
/// each piece with a call to `memcpy`, and most pieces are a varint of one
/// to three bytes: a `map` of small numbers spent a fifth of its time
/// there. Short pieces are pushed byte by byte instead.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if data.len() <= 16 {
            self.0.reserve(data.len());
            for &byte in data {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::Codec(format!(
            "cannot deserialize {}: {e}",
            std::any::type_name::<T>()
        ))
    })
}

impl<F, Args, M> ErasedTask for TaskEntry<F, Args, M>
where
    F: TaskFn<Args, M> + Sync,
    Args: DeserializeOwned,
    F::Output: Serialize,
{
    fn name(&self) -> String {
        task_name::<F>(self.site)
    }

    fn signature(&self) -> String {
        format!(
            "{} -> {}",
            std::any::type_name::<Args>(),
            std::any::type_name::<F::Output>()
        )
    }

    fn invoke(&self, arg: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let args: Args = decode(arg)?;
        encode_into(&self.f.call(args), out)
    }

    fn invoke_chunk(&self, args: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let args: Vec<Args> = decode(args)?;
        let results: Vec<F::Output> = args.into_iter().map(|a| self.f.call(a)).collect();
        encode_into(&results, out)
    }
}

/// A function registered for the pools, made by [`task!`](crate::task!).
///
/// `A` is the argument (a tuple for several arguments, `()` for none) and
/// `R` the result. A `Task` is `Copy`; it can be called in this process
/// with [`call`](Task::call), submitted to a [`ThreadPoolExecutor`] or sent
/// by name to a [`ProcessPoolExecutor`] worker.
///
/// [`ThreadPoolExecutor`]: crate::ThreadPoolExecutor
/// [`ProcessPoolExecutor`]: crate::ProcessPoolExecutor
///
/// # Examples
///
/// ```
/// use concurrent_futures::task;
///
/// fn add(a: u64, b: u64) -> u64 { a + b }
/// let t = task!(add);
/// assert_eq!(t.call((2, 3)), 5);
/// assert!(t.name().ends_with("add"));
/// ```
pub struct Task<A: 'static, R: 'static> {
    entry: &'static dyn ErasedTask,
    f: &'static dyn Call<A, R>,
    limit: Option<std::time::Duration>,
    retries: Option<u32>,
}

impl<A: 'static, R: 'static> Clone for Task<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: 'static, R: 'static> Copy for Task<A, R> {}

impl<A: 'static, R: 'static> Task<A, R> {
    /// Used by `task!`: pairs the registry entry with the typed function.
    #[doc(hidden)]
    pub fn __new<F, M: 'static>(entry: &'static dyn ErasedTask, f: F) -> Self
    where
        F: TaskFn<A, M, Output = R>,
    {
        // `F` is a function item or a non-capturing closure: zero-sized, so
        // leaking its box allocates nothing.
        Task {
            entry,
            f: Box::leak(Box::new(Wrap(f, PhantomData))),
            limit: None,
            retries: None,
        }
    }

    /// Calls the task in this thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::task;
    /// fn hello() -> &'static str { "hi" }
    /// assert_eq!(task!(hello).call(()), "hi");
    /// ```
    pub fn call(&self, arg: A) -> R {
        self.f.call(arg)
    }

    /// The name a worker process finds the task by: the function's path, or
    /// `closure@file:line:column` for a closure.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::task;
    /// mod m { pub fn double(x: i32) -> i32 { 2 * x } }
    /// assert!(task!(m::double).name().ends_with("m::double"));
    /// assert!(task!(|x: i32| x).name().starts_with("closure@"));
    /// ```
    pub fn name(&self) -> String {
        self.entry.name()
    }

    /// The same task with a run-time limit, for a
    /// [`ProcessPoolExecutor`](crate::ProcessPoolExecutor): it counts from
    /// when the task starts in its worker, and at the limit the worker is
    /// killed and replaced and the future fails with
    /// [`Error::TimeLimit`](crate::Error::TimeLimit). Overrides the pool's
    /// [`task_time_limit`](crate::ProcessPoolBuilder::task_time_limit). A
    /// thread cannot be killed, so the thread pool ignores the limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{task, Error, ProcessPoolExecutor};
    ///
    /// fn spin() -> u64 { loop { std::hint::spin_loop() } }
    ///
    /// fn main() -> Result<(), Error> {
    ///     concurrent_futures::init();
    ///     let pool = ProcessPoolExecutor::new(1)?;
    ///     let fut = pool.submit(task!(spin).time_limit(Duration::from_millis(200)), ());
    ///     assert_eq!(fut.result(), Err(Error::TimeLimit(Duration::from_millis(200))));
    ///     Ok(())
    /// }
    /// ```
    #[must_use]
    pub fn time_limit(mut self, limit: std::time::Duration) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The run-time limit set with [`time_limit`](Task::time_limit).
    pub(crate) fn limit(&self) -> Option<std::time::Duration> {
        self.limit
    }

    /// The same task, run again up to `n` times on a
    /// [`ProcessPoolExecutor`](crate::ProcessPoolExecutor) when its worker
    /// process dies under it (a crash, a signal, a lost connection).
    /// Overrides the pool's
    /// [`task_retries`](crate::ProcessPoolBuilder::task_retries) (default
    /// 0, Python's behaviour). A task is never run twice at once: it runs
    /// again only once the worker that ran it is gone. A task that
    /// panicked, returned an error or ran past its time limit is never run
    /// again. After the last try, the future's error names every try. The
    /// thread pool ignores it (a thread does not die under a task).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{task, ProcessPoolExecutor};
    ///
    /// /// Crashes its worker on the first try (marked by a file), then works.
    /// fn flaky(marker: String) -> u32 {
    ///     if std::fs::metadata(&marker).is_err() {
    ///         std::fs::write(&marker, b"").unwrap();
    ///         std::process::abort();
    ///     }
    ///     7
    /// }
    ///
    /// fn main() -> Result<(), concurrent_futures::Error> {
    ///     concurrent_futures::init();
    ///     let marker = std::env::temp_dir().join(format!("cf-flaky-{}", std::process::id()));
    ///     let pool = ProcessPoolExecutor::new(1)?;
    ///     let fut = pool.submit(task!(flaky).retries(1), marker.display().to_string());
    ///     assert_eq!(fut.result()?, 7);
    ///     let _ = std::fs::remove_file(marker);
    ///     Ok(())
    /// }
    /// ```
    #[must_use]
    pub fn retries(mut self, n: u32) -> Self {
        self.retries = Some(n);
        self
    }

    /// The retries set with [`retries`](Task::retries).
    pub(crate) fn retry_limit(&self) -> Option<u32> {
        self.retries
    }

    /// The registry entry a worker process finds the task by.
    pub(crate) fn entry(&self) -> &'static dyn ErasedTask {
        self.entry
    }
}

impl<A: 'static, R: 'static> fmt::Debug for Task<A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.entry.name())
            .field("signature", &self.entry.signature())
            .field("time_limit", &self.limit)
            .field("retries", &self.retries)
            .finish()
    }
}

/// Registers a function for the pools and returns its [`Task`].
///
/// Works with a path to a function (`task!(heavy_compute)`,
/// `task!(my::module::f)`, `task!(generic::<u32>)`) or a non-capturing
/// closure with typed arguments (`task!(|x: u64| x * 2)`). Functions of
/// several arguments take them as one tuple. Arguments and results must be
/// serde types, checked at compile time. Registration happens at link time,
/// so worker processes know every task the parent can send.
///
/// A `fn` pointer is refused at compile time: all pointers of one signature
/// share a type, so a worker could not tell two of them apart.
///
/// ```compile_fail
/// fn square(x: u64) -> u64 { x * x }
/// let t = concurrent_futures::task!(square as fn(u64) -> u64);
/// ```
///
/// # Compile errors and what to do
///
/// - **"a task's argument cannot be a reference: it arrives as bytes from
///   another process"** (E0277): an argument borrows (`fn f(s: &str)`,
///   `&[u8]`, `&T`, or such an element of the arguments of a function of
///   several). A task's argument is decoded from bytes in another process,
///   so it must be owned: take `String`, `Vec<u8>` or `T`, and pass an
///   owned value. rustc adds its own "implementation of `Deserialize` is
///   not general enough" after it, and says only that for a reference
///   deeper inside an argument (`Vec<&str>`), which the crate cannot see.
///
///   ```compile_fail,E0277
///   fn shout(s: &str) -> String { s.to_uppercase() }
///   let t = concurrent_futures::task!(shout); // take `s: String` instead
///   ```
///
///   ```compile_fail,E0277
///   fn count(data: &[u8], byte: u8) -> usize { data.iter().filter(|&&b| b == byte).count() }
///   let t = concurrent_futures::task!(count); // take `data: Vec<u8>` instead
///   ```
///
/// - **"attempt to use a non-constant value in a constant"** (E0435, with
///   a suggestion to edit this crate's `task.rs`: ignore it): the closure
///   captures a local variable. A task is found by name in another process,
///   where your locals do not exist; pass the value as an argument
///   instead: `task!(|(x, n): (u64, u64)| x * n)` submitted with `(x, n)`.
///
///   ```compile_fail,E0435
///   let n = 3u64;
///   let t = concurrent_futures::task!(move |x: u64| x * n); // pass n in the argument
///   ```
///
///   This one is rustc's: `task!` registers the closure in a `static` (so
///   that a worker finds it at link time), and rustc rejects the captured
///   local while resolving names, before any check of the crate's can run.
///   Its label points at the captured variable.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{task, ThreadPoolExecutor, Executor};
///
/// fn area(w: u32, h: u32) -> u32 { w * h }
/// let pool = ThreadPoolExecutor::new(2)?;
/// assert_eq!(pool.submit_task(task!(area), (3, 4)).result()?, 12);
/// # Ok::<(), concurrent_futures::Error>(())
/// ```
#[macro_export]
macro_rules! task {
    ($f:expr) => {{
        {
            // A borrowed argument gets an error that says what to do
            // (src/task_arg.rs), before rustc's lifetime error.
            #[allow(unused_imports)]
            use $crate::__private::OwnedByDefault as _;
            let probe = $crate::__private::arg_probe(&$f);
            $crate::__private::assert_owned(probe.check());
            $crate::__private::assert_owned(probe.check_0());
            $crate::__private::assert_owned(probe.check_1());
            $crate::__private::assert_owned(probe.check_2());
            $crate::__private::assert_owned(probe.check_3());
            $crate::__private::assert_owned(probe.check_4());
            $crate::__private::assert_owned(probe.check_5());
        }
        #[$crate::__private::linkme::distributed_slice($crate::__private::TASKS)]
        #[linkme(crate = $crate::__private::linkme)]
        static ENTRY: &'static dyn $crate::__private::ErasedTask =
            &$crate::__private::TaskEntry::new($f, concat!(file!(), ":", line!(), ":", column!()));
        $crate::Task::__new(ENTRY, $f)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_into_appends_what_postcard_would_write() {
        let value = (
            7u64,
            u64::MAX,
            "a string longer than sixteen bytes".to_string(),
            vec![0u32, 127, 128, 70_000],
            Some(-3i64),
        );
        let mut out = vec![0xAA];
        encode_into(&value, &mut out).unwrap();
        assert_eq!(out[0], 0xAA, "what was there stays");
        assert_eq!(out[1..], postcard::to_stdvec(&value).unwrap()[..]);
        assert_eq!(
            decode::<(u64, u64, String, Vec<u32>, Option<i64>)>(&out[1..]),
            Ok(value)
        );
    }

    #[test]
    fn encode_into_leaves_the_buffer_empty_on_error() {
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut out = vec![1, 2, 3];
        let err = encode_into(&(1u8, Refuses), &mut out).unwrap_err();
        assert!(out.is_empty());
        assert!(
            matches!(err, Error::Codec(ref m) if m.contains("no")),
            "{err:?}"
        );
    }
}
