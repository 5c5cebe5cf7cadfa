//! Replays the fuzz corpus (`fuzz/corpus/<target>/`), the regression inputs
//! (`fuzz/regressions/<target>/`) and the built-in seeds through the same
//! functions the fuzz targets call, in plain `cargo test`: no input may
//! panic, hang, break an invariant, or allocate out of proportion to its
//! size. A counting allocator measures each input's peak allocation.
#![cfg(unix)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use concurrent_futures::__fuzz::{
    agent_side, frames, link_seeds, link_side, pool_side, seeds as wire_seeds, worker_side,
};

/// Counts the bytes this thread holds, and their peak.
struct Counting;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to `System` unchanged; the counters are
// thread-local `Cell`s with const initializers, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result and the most bytes it held at once.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = HELD.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    (r, (PEAK.with(Cell::get) - base).max(0) as usize)
}

/// What `read_frame` may reserve before the peer backs a length with data.
const FIRST_READ: usize = 16 << 20;

/// The allowance for one input of `len` bytes: the frame reader's first
/// step, twice the input (frames are copied out of it, results back in),
/// and a fixed slack for tables, channels and error messages.
fn budget(len: usize) -> usize {
    FIRST_READ + 4 * len + (2 << 20)
}

type Target = fn(&[u8]) -> Result<usize, String>;

const TARGETS: [(&str, Target); 5] = [
    ("frame_decoder", |d| Ok(frames(d))),
    ("pool_handshake", pool_side),
    ("worker_dispatch", worker_side),
    ("agent_dispatch", agent_side),
    ("link_reader", link_side),
];

/// The built-in seeds of a target: the host link's come from the agent's
/// fuzz module, the others from the process pool's.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "link_reader" => link_seeds(),
        _ => wire_seeds(target),
    }
}

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("readable corpus directory").path();
            if path.is_file() {
                let bytes = std::fs::read(&path).expect("readable corpus file");
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

fn replay(name: &str, run: Target, input: &[u8], origin: &str) {
    // Panicking fuzz tasks capture a backtrace when RUST_BACKTRACE asks for
    // one (issue 9), and resolving its symbols costs tens of MB that have
    // nothing to do with the input. The budget is about the protocol, so
    // backtraces are off in this binary (std reads this before any capture,
    // and every capture here happens inside a replay).
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
    let (outcome, peak) = peak_of(|| run(input));
    if let Err(broken) = outcome {
        panic!("{name}: {origin}: invariant broken: {broken}");
    }
    assert!(
        peak <= budget(input.len()),
        "{name}: {origin}: {peak} bytes allocated for {} bytes of input",
        input.len()
    );
}

#[test]
fn corpus_replays_cleanly() {
    let mut total = 0;
    for (name, run) in TARGETS {
        let files = inputs(name);
        assert!(!files.is_empty(), "no corpus for {name}");
        for (path, bytes) in &files {
            replay(name, run, bytes, &path.display().to_string());
        }
        total += files.len();
    }
    eprintln!("replayed {total} corpus files");
}

#[test]
fn seeds_replay_cleanly_and_reach_the_code_behind_the_handshake() {
    for (name, run) in TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for (i, seed) in seeds.iter().enumerate() {
            replay(name, run, seed, &format!("seed {i}"));
        }
    }
    // The seeds are built by this build: they pass the handshake and
    // complete futures, and the worker answers their calls.
    let completed: usize = seeds("pool_handshake")
        .iter()
        .map(|s| pool_side(s).unwrap())
        .sum();
    assert!(completed >= 5, "{completed}");
    let replies: usize = seeds("worker_dispatch")
        .iter()
        .map(|s| worker_side(s).unwrap())
        .sum();
    assert!(replies >= 8, "{replies}");
    // The link reader takes every frame of the first seed, and the
    // frames before the one refused in the others.
    let taken: usize = seeds("link_reader")
        .iter()
        .map(|s| link_side(s).unwrap())
        .sum();
    assert!(taken >= 17, "{taken}");
}

#[test]
fn every_prefix_of_a_seed_is_handled() {
    // Cut short anywhere: a clean error, never a panic or a wait.
    for (name, run) in TARGETS {
        for seed in seeds(name) {
            for cut in 0..seed.len() {
                replay(name, run, &seed[..cut], &format!("a prefix of {cut} bytes"));
            }
        }
    }
}

/// Regression: a frame claiming 1 GiB, backed by just over the first
/// step's 16 MiB, made `read_frame` reserve the whole claimed gigabyte at
/// once. It now grows by at most what arrived.
#[test]
fn a_bogus_length_costs_what_the_peer_sent() {
    let mut data = (1u32 << 30).to_le_bytes().to_vec();
    data.push(0x82);
    data.resize(data.len() + FIRST_READ + 1, 0);
    let (frames_read, peak) = peak_of(|| frames(&data));
    assert_eq!(frames_read, 0);
    assert!(
        peak <= 2 * FIRST_READ + (1 << 20),
        "{peak} bytes reserved for {} bytes of input",
        data.len()
    );
    // Through the handshake too: a HELLO frame claiming 1 GiB.
    let mut hello = seeds("pool_handshake").remove(0);
    let magic_end = 8;
    hello.truncate(magic_end);
    hello.extend_from_slice(&(1u32 << 30).to_le_bytes());
    hello.push(0x81);
    hello.resize(hello.len() + FIRST_READ + 1, 0);
    let (outcome, peak) = peak_of(|| pool_side(&hello));
    assert_eq!(outcome, Ok(0));
    assert!(peak <= 2 * FIRST_READ + (1 << 20), "{peak}");
}
