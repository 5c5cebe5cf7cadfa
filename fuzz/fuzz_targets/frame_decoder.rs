//! Frames and replies read from arbitrary bytes: `read_frame` until the end
//! or an error, `decode_reply` on each, and the search for the handshake
//! magic. Must not panic, hang or allocate out of proportion to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = concurrent_futures::__fuzz::frames(data);
});
