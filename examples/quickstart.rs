//! The README's demo: both pools in one program.
//!
//! Run with `cargo run --release --example quickstart`.

use std::time::{Duration, Instant};

use concurrent_futures::{as_completed, task, Error, ProcessPoolExecutor, ThreadPoolExecutor};

/// Pretends to download a page: I/O-bound work for the thread pool.
fn fetch(url: &str) -> String {
    std::thread::sleep(Duration::from_millis(200));
    format!("<html>{url}</html>")
}

/// CPU-bound work for the process pool (or the thread pool: Rust has no GIL).
/// The sum wraps around like Python's would not; it is only busy work.
fn heavy_compute(n: u64) -> u64 {
    (0..n).fold(0u64, |acc, i| acc.wrapping_add(std::hint::black_box(i * i)))
}

fn main() -> Result<(), Error> {
    // Rust's `if __name__ == "__main__":` - in a worker process this runs
    // the worker loop and never returns. Keep it the first line of main.
    concurrent_futures::init();

    // Threads: closures, results in input order.
    let urls = ["a.example", "b.example", "c.example", "d.example"];
    let start = Instant::now();
    let threads = ThreadPoolExecutor::new(4)?;
    let pages: Vec<String> = threads.map(fetch, urls).collect::<Result<_, _>>()?;
    println!("fetched {} pages in {:?}", pages.len(), start.elapsed());

    // As they complete: the quickest first.
    let futures: Vec<_> = [300u64, 100, 200]
        .into_iter()
        .map(|ms| {
            threads.submit(move || {
                std::thread::sleep(Duration::from_millis(ms));
                ms
            })
        })
        .collect();
    for fut in as_completed(futures) {
        println!("a task that slept {} ms finished", fut.result()?);
    }
    threads.shutdown();

    // Processes: registered functions, serde arguments, isolated crashes.
    let start = Instant::now();
    let processes = ProcessPoolExecutor::new(2)?;
    let sums: Vec<u64> = processes
        .map(task!(heavy_compute), vec![20_000_000; 4])
        .collect::<Result<_, _>>()?;
    println!(
        "4 x heavy_compute(2e7) = {} each, in {:?} on 2 processes",
        sums[0],
        start.elapsed()
    );
    Ok(())
}
