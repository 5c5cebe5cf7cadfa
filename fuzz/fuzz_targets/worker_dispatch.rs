//! The worker's side of the pipe over arbitrary pool input: DECLARE, CALL
//! and INIT frames through the worker's dispatch loop; every frame it
//! writes back must be one the pool accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = concurrent_futures::__fuzz::worker_side(data) {
        panic!("invariant broken: {broken}");
    }
});
