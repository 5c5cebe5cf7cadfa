//! The same pool on one machine or many.
//!
//! ```text
//! cargo run --example cluster                        # workers on this machine
//! cargo run --example cluster -- node1:8 node2:8     # 16 workers over ssh
//! cargo run --example cluster -- -F my.conf node1:4  # with an ssh config file
//! srun -n 8 ... / salloc -n 8 cargo run --example cluster -- --slurm
//! ```
//!
//! Over ssh this executable is shipped to each host on first use and kept
//! in `~/.cache/concurrent-futures/` there; the hosts need no Rust and no
//! copy of the program.

use concurrent_futures::launch::{Local, Slurm};

#[path = "support/hosts.rs"]
mod hosts;
use concurrent_futures::{task, Error, ProcessPoolExecutor};

/// A CPU-bound task: the sum of squares below `n`.
fn heavy_compute(n: u64) -> u64 {
    (0..n).map(|i| i.wrapping_mul(i)).fold(0, u64::wrapping_add)
}

/// Where a task ran.
fn where_am_i(_: ()) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".to_string());
    format!("{host} pid {}", std::process::id())
}

fn main() -> Result<(), Error> {
    concurrent_futures::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let builder = ProcessPoolExecutor::builder();
    let builder = if args.iter().any(|a| a == "--slurm") {
        builder.launcher(Slurm::new())
    } else {
        match hosts::ssh_from_args(&args)? {
            Some(ssh) => builder.launcher(ssh),
            None => builder.launcher(Local::new()),
        }
    };
    let pool = builder.build()?;
    println!("{} workers", pool.max_workers());

    let mut places: Vec<String> = pool
        .map(task!(where_am_i), vec![(); 4 * pool.max_workers()])
        .collect::<Result<_, _>>()?;
    places.sort();
    places.dedup();
    for p in &places {
        println!("a worker: {p}");
    }

    let sums: Vec<u64> = pool
        .map(
            task!(heavy_compute),
            vec![20_000_000; 2 * pool.max_workers()],
        )
        .collect::<Result<_, _>>()?;
    println!("{} heavy tasks, first sum {}", sums.len(), sums[0]);
    Ok(())
}
