//! The repetition count and the median the process-pool benches share.

/// How many times to repeat a measurement: `BENCH_REPS`, else `default`.
pub(crate) fn reps(default: usize) -> usize {
    std::env::var("BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `xs` (the upper one of an even count).
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
