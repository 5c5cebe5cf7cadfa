//! A progress bar over long work, with `indicatif`.
//!
//! `map` yields results in input order and `as_completed` as they finish:
//! either drives a bar, one `inc(1)` per result, on the caller's thread.
//! The tasks know nothing of the bar.
//!
//! Run: `cargo run --release --example progress`

use std::thread;
use std::time::Duration;

use concurrent_futures::{as_completed, Error, ThreadPoolExecutor};
use indicatif::{ProgressBar, ProgressStyle};

/// A stand-in for real work: "checks" a file for `ms` milliseconds.
fn check(id: u64) -> u64 {
    let ms = 20 + (id * 37) % 60;
    thread::sleep(Duration::from_millis(ms));
    ms
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

fn main() -> Result<(), Error> {
    let pool = ThreadPoolExecutor::new(8)?;
    let ids: Vec<u64> = (0..200).collect();

    // 1. map: results in input order; the bar moves as the front finishes.
    let progress = bar(ids.len() as u64, "map");
    let mut total = 0;
    for ms in pool.map(check, ids.iter().copied()) {
        total += ms?;
        progress.inc(1);
    }
    progress.finish();

    // 2. as_completed: the bar moves as each task finishes, in any order;
    //    the key says which one it was.
    let progress = bar(ids.len() as u64, "completed");
    let jobs: Vec<_> = ids
        .iter()
        .map(|&id| (id, pool.submit(move || check(id))))
        .collect();
    let mut slowest = (0, 0);
    for (id, fut) in as_completed(jobs) {
        let ms = fut.result()?;
        if ms > slowest.1 {
            slowest = (id, ms);
        }
        progress.inc(1);
    }
    progress.finish();

    println!(
        "{total} ms of work in all; the slowest was task {} ({} ms)",
        slowest.0, slowest.1
    );
    Ok(())
}
