//! Process pools in `#[test]` functions: [`test_worker!`](crate::test_worker!)
//! declares the test that workers run, and a pool in a test binary that has
//! none is refused instead of re-running the whole test suite in each worker.
//!
//! A test binary's `main` is libtest's. Re-run without arguments, it runs
//! every test: other tests' side effects happen inside the workers, and
//! nothing calls `init()`. So a pool that re-runs this executable passes
//! libtest the full path of the entry test (`--exact`), found in a
//! link-time list that `test_worker!` adds to; with no entry and no
//! `worker_args` or `worker_command`, a pool built from a test refuses.

use std::ffi::OsString;

use crate::Error;

/// The `module_path!()` of every `test_worker!()` in this binary (only in
/// test builds: the macro's `static` is `#[cfg(test)]`).
#[doc(hidden)]
#[linkme::distributed_slice]
pub static TEST_WORKERS: [&'static str];

/// The name of the test function `test_worker!` declares.
const ENTRY_FN: &str = "concurrent_futures_worker";

/// Declares the worker-entry test of a test binary, so that process pools
/// built in its `#[test]`s need no `worker_args`.
///
/// Put `concurrent_futures::test_worker!();` once in each test binary (at
/// the top of a file in `tests/`, or in a `#[cfg(test)] mod` of a library).
/// It declares `#[test] fn concurrent_futures_worker()`, which calls
/// [`init`](crate::init): in a normal test run it passes at once, and in a
/// worker it becomes the worker loop. A pool that re-runs the test binary
/// (no [`worker_command`](crate::ProcessPoolBuilder::worker_command), no
/// [`worker_args`](crate::ProcessPoolBuilder::worker_args)) then selects
/// exactly that test by its full path, so no other test ever runs in a
/// worker.
///
/// Without it, a pool built in a test returns
/// `Err(Error::InvalidArgument(..))` that says what to add.
///
/// # Examples
///
/// ```
/// // tests/pool.rs
/// concurrent_futures::test_worker!();
///
/// fn double(x: u32) -> u32 { x * 2 }
///
/// // In a test file, a `#[test]` function:
/// fn doubles_in_a_worker() {
///     let pool = concurrent_futures::ProcessPoolExecutor::new(2).unwrap();
///     let fut = pool.submit(concurrent_futures::task!(double), 21);
///     assert_eq!(fut.result(), Ok(42));
/// }
/// # fn main() { concurrent_futures::init(); doubles_in_a_worker(); }
/// ```
#[macro_export]
macro_rules! test_worker {
    () => {
        #[cfg(test)]
        #[$crate::__private::linkme::distributed_slice($crate::__private::TEST_WORKERS)]
        #[linkme(crate = $crate::__private::linkme)]
        static __CONCURRENT_FUTURES_TEST_WORKER: &'static str = ::core::module_path!();

        /// The worker entry of this test binary (`concurrent_futures::test_worker!`):
        /// passes at once in a test run, serves tasks in a pool worker.
        #[test]
        fn concurrent_futures_worker() {
            $crate::init();
        }
    };
}

/// libtest's name of an entry declared in module `module_path`: the path
/// without the crate name, then the function.
fn test_name(module_path: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{ENTRY_FN}"),
        None => ENTRY_FN.to_string(),
    }
}

/// The worker arguments that make this test binary run only its entry.
fn entry_args(module_path: &str) -> Vec<OsString> {
    [
        test_name(module_path).as_str(),
        "--exact",
        "--nocapture",
        "--quiet",
    ]
    .into_iter()
    .map(OsString::from)
    .collect()
}

/// Whether this process looks like a libtest binary running a test here:
/// cargo names test binaries `<name>-<16 hex digits>`, and libtest runs
/// each test on a thread other than `main`.
fn in_a_libtest_test() -> bool {
    let exe = std::env::current_exe().ok();
    let hashed = exe
        .as_deref()
        .and_then(std::path::Path::file_name)
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('-'))
        .is_some_and(|(_, h)| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    hashed && std::thread::current().name() != Some("main")
}

/// The worker arguments for a pool that re-runs this executable and was
/// given none: the entry test's, if the binary declares one; a refusal in a
/// test binary that does not; none otherwise.
pub(crate) fn default_worker_args() -> Result<Vec<OsString>, Error> {
    if let Some(module) = TEST_WORKERS.first() {
        return Ok(entry_args(module));
    }
    if in_a_libtest_test() {
        return Err(Error::InvalidArgument(
            "a process pool in a #[test] needs a worker entry, or every worker would run \
             this binary's whole test suite: add `concurrent_futures::test_worker!();` to \
             the test file, or choose the workers with .worker_args(..) or \
             .worker_command(..)"
                .to_string(),
        ));
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_drop_the_crate_name() {
        assert_eq!(test_name("pool_tests"), "concurrent_futures_worker");
        assert_eq!(
            test_name("my_crate::process::tests"),
            "process::tests::concurrent_futures_worker"
        );
        assert_eq!(
            entry_args("t"),
            [
                "concurrent_futures_worker",
                "--exact",
                "--nocapture",
                "--quiet"
            ]
        );
    }
}
