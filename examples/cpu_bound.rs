//! The classic CPU-bound case: `heavy_compute(n)` = the sum of `i * i` for
//! `i < n`, over four inputs of 10^6, serially and on a process pool.
//!
//! Run with `cargo run --release --example cpu_bound`.

use std::time::Instant;

use concurrent_futures::{task, Error, ProcessPoolExecutor};

fn heavy_compute(n: u64) -> u64 {
    // `black_box` keeps the optimizer from replacing the loop by a formula.
    (0..n).map(|i| std::hint::black_box(i * i)).sum()
}

fn main() -> Result<(), Error> {
    // In a worker process this runs the worker loop and never returns.
    concurrent_futures::init();

    let inputs = vec![1_000_000u64; 4];

    let t = Instant::now();
    let serial: Vec<u64> = inputs.iter().map(|&n| heavy_compute(n)).collect();
    let serial_time = t.elapsed();

    let t = Instant::now();
    let pool = ProcessPoolExecutor::new(4)?;
    let parallel: Vec<u64> = pool
        .map(task!(heavy_compute), inputs.clone())
        .collect::<Result<_, _>>()?;
    let pool_time = t.elapsed();
    pool.shutdown();

    assert_eq!(serial, parallel);
    for (n, sum) in inputs.iter().zip(&parallel) {
        println!("heavy_compute({n}) = {sum}");
    }
    println!("serial: {serial_time:?}");
    println!("pool:   {pool_time:?} (including starting the workers)");
    Ok(())
}
