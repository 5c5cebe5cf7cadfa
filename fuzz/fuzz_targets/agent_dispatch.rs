//! The host agent's dispatch over arbitrary pool input: SPAWN, DATA,
//! CLOSE, SIGNAL and PING frames against a fake host of 2 slots; the
//! slots must hold, every spawn must be answered once, and every answer
//! must be one the pool accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = concurrent_futures::__fuzz::agent_side(data) {
        panic!("invariant broken: {broken}");
    }
});
