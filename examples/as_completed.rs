//! Results in the order they finish, with `as_completed`.
//!
//! The Python original:
//!
//! ```python
//! with ThreadPoolExecutor() as pool:
//!     futures = {pool.submit(work, name, secs): name for name, secs in jobs}
//!     for fut in as_completed(futures):
//!         print(fut.result())
//! ```
//!
//! Run: `cargo run --release --example as_completed`

use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{as_completed, Error, ThreadPoolExecutor};

/// A task that takes `ms` milliseconds and says so.
fn work(name: &str, ms: u64) -> String {
    thread::sleep(Duration::from_millis(ms));
    format!("{name} took {ms} ms")
}

fn main() -> Result<(), Error> {
    let jobs = [("e", 500), ("b", 200), ("d", 400), ("a", 100), ("c", 300)];
    let started = Instant::now();
    let pool = ThreadPoolExecutor::new(jobs.len())?;

    // `pool.submit(fn, *args)` becomes `pool.submit(closure)`: `move`
    // hands the arguments to the closure, which runs on a pool thread.
    let futures: Vec<_> = jobs
        .iter()
        .map(|&(name, ms)| pool.submit(move || work(name, ms)))
        .collect();

    // Submitted e, b, d, a, c; printed a, b, c, d, e as each one finishes.
    // `result()` does not block here: the future is already done. It returns
    // a `Result` where Python would raise.
    for fut in as_completed(futures) {
        println!("{:>5.2?}  {}", started.elapsed(), fut.result()?);
    }
    Ok(())
}
