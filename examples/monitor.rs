//! Watching a pool: a long `map`, with one `indicatif` bar for the tasks
//! and one per host, all driven by `ProcessPoolExecutor::stats()` from a
//! thread of their own while the caller consumes the results.
//!
//! ```text
//! cargo run --example monitor                      # workers on this machine
//! cargo run --example monitor -- node1:4 node2:4   # two hosts over ssh
//! cargo run --example monitor -- -F my.conf node1:2 node2:2
//! ```
//!
//! Set `RUST_LOG`-style filtering in your own application with a
//! `tracing` subscriber to also see the pool's events (workers started,
//! replaced, hosts down); this example prints only the bars.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use concurrent_futures::launch::Local;

#[path = "support/hosts.rs"]
mod hosts;
use concurrent_futures::{task, Error, PoolStats, ProcessPoolExecutor};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// A stand-in for real work: about 20 ms of CPU.
fn crunch(n: u64) -> u64 {
    let mut x = n;
    let until = std::time::Instant::now() + Duration::from_millis(20);
    while std::time::Instant::now() < until {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    }
    x
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Draws one snapshot: the task bar and a bar per host.
fn draw(s: &PoolStats, tasks: &ProgressBar, hosts: &[ProgressBar]) {
    tasks.set_position(s.completed + s.failed);
    tasks.set_message(format!(
        "{} running, {} queued, {} failed, {} restarts",
        s.running, s.queued, s.failed, s.restarts
    ));
    for (bar, h) in hosts.iter().zip(&s.hosts) {
        bar.set_position(h.workers as u64);
        let state = if h.up { "up" } else { "down" };
        let error = h.last_error.as_deref().unwrap_or("");
        bar.set_message(format!("{:<12} {state:<4} {error}", h.name));
    }
}

fn main() -> Result<(), Error> {
    concurrent_futures::init();
    let builder = ProcessPoolExecutor::builder();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pool = match hosts::ssh_from_args(&args)? {
        Some(ssh) => builder.launcher(ssh).build()?,
        None => builder.launcher(Local::new()).max_workers(4).build()?,
    };
    let items: u64 = 400;

    // The bars: one for the tasks, one per host (workers out of the
    // pool's maximum).
    let multi = MultiProgress::new();
    let tasks = multi.add(ProgressBar::new(items));
    tasks.set_style(style("tasks        [{bar:40}] {pos}/{len} {msg}"));
    let hosts: Vec<ProgressBar> = pool
        .stats()
        .hosts
        .iter()
        .map(|_| {
            let bar = multi.add(ProgressBar::new(pool.max_workers() as u64));
            bar.set_style(style("{msg:40} [{bar:20}] {pos} workers"));
            bar
        })
        .collect();

    // A thread takes a snapshot every 50 ms: stats() is a few counters
    // and one look at the pool's lock, cheap enough for that.
    let done = AtomicBool::new(false);
    let checksum = thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                draw(&pool.stats(), &tasks, &hosts);
                thread::sleep(Duration::from_millis(50));
            }
        });
        // One item per task (chunksize 1), so the task bar counts items.
        let mut checksum = 0u64;
        let mut outcome = Ok(());
        for x in pool.map(task!(crunch), 0..items).chunksize(1) {
            match x {
                Ok(v) => checksum ^= v,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        done.store(true, Ordering::Relaxed);
        outcome.map(|()| checksum)
    })?;
    let s = pool.stats();
    draw(&s, &tasks, &hosts);
    tasks.finish();
    for bar in &hosts {
        bar.finish();
    }
    println!(
        "{} completed, {} failed, {} restarts; checksum {checksum:x}",
        s.completed, s.failed, s.restarts
    );
    Ok(())
}
