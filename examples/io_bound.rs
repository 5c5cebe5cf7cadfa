//! I/O-bound work on a thread pool: four slow "fetches" at once.
//!
//! The Python original:
//!
//! ```python
//! with ThreadPoolExecutor(max_workers=4) as pool:
//!     for page in pool.map(fetch, urls):
//!         print(page)
//! ```
//!
//! Each fetch sleeps one second (standing in for a network call), so four
//! run side by side in about one second, not four.
//!
//! Run: `cargo run --release --example io_bound`

use std::thread;
use std::time::{Duration, Instant};

use concurrent_futures::{Error, ThreadPoolExecutor};

/// Pretends to download `url`: waits one second, returns a fake page.
fn fetch(url: &str) -> String {
    thread::sleep(Duration::from_secs(1));
    format!("<html>{url}</html>")
}

fn main() -> Result<(), Error> {
    let urls = [
        "https://example.com/a",
        "https://example.com/b",
        "https://example.com/c",
        "https://example.com/d",
    ];
    let started = Instant::now();

    // `with ThreadPoolExecutor(4) as pool:` - the pool shuts down (and waits
    // for its threads) when `pool` goes out of scope at the end of `main`.
    let pool = ThreadPoolExecutor::new(4)?;

    // `pool.map(fetch, urls)`: results come back in input order, whatever
    // order the fetches finish in. Each item is a `Result`: a task that
    // panics gives `Err(Error::Panicked)` instead of raising.
    for (url, page) in urls.iter().zip(pool.map(fetch, urls)) {
        println!("{url} -> {}", page?);
    }

    // Four one-second fetches on four threads: about one second in all.
    println!("elapsed: {:.2?}", started.elapsed());
    Ok(())
}
