//! The pool's side of a host link over arbitrary agent output: the
//! agent's handshake, then STARTED, SPAWN_FAILED, OUTPUT, EXITED and PONG
//! frames for workers 0 to 2 (and 3, let go); the reader must end with a
//! clean end, a protocol or an I/O error, and every worker must hold
//! exactly the start, exit status and output bytes the agent sent it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = concurrent_futures::__fuzz::link_side(data) {
        panic!("invariant broken: {broken}");
    }
});
