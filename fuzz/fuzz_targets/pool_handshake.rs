//! The pool's side of the pipe over arbitrary worker output: the handshake
//! (noise, magic, HELLO, version and build checks), then the replies that
//! complete futures through the pool's own code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(broken) = concurrent_futures::__fuzz::pool_side(data) {
        panic!("invariant broken: {broken}");
    }
});
