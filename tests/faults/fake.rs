//! Fault matrix, part 2: fake workers that break the wire protocol.
//!
//! Each row starts a pool whose `worker_command` is this test binary run
//! again as `fake_entry` with `FAKE=<mode>`: instead of calling `init()`,
//! it writes crafted bytes to its stdout (frames built by hand from
//! `docs/design.md`) and then exits, or lingers, as the mode says. Every
//! row asserts that all the futures it submitted, and a later submit, fail
//! with one and the same `BrokenPool` message naming the fake's pid and the
//! protocol problem; that the failure is prompt (not a handshake timeout,
//! unless the row is about one); that the fake process is reaped; and that
//! this process never allocated anything near a bogus frame length (its
//! peak resident set stays far below the 4 GiB a length prefix can claim).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::faults_common::*;
use concurrent_futures::{task, ProcessPoolExecutor};

/// `"\0CFWRK1\0"`: precedes the worker's first frame.
const MAGIC: [u8; 8] = [0x00, 0x43, 0x46, 0x57, 0x52, 0x4B, 0x31, 0x00];
/// Frame kinds (worker to pool).
const HELLO: u8 = 0x81;
const RESULT: u8 = 0x82;

/// The identity a worker of this very build announces.
fn our_build() -> String {
    format!(
        "concurrent-futures {} {}-bit le",
        env!("CARGO_PKG_VERSION"),
        usize::BITS
    )
}

/// `u32 LE length`, `kind`, `body`: one frame.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// The magic and a HELLO frame with this version and build identity.
fn hello(version: u32, build: &str) -> Vec<u8> {
    let mut body = version.to_le_bytes().to_vec();
    body.extend_from_slice(&std::process::id().to_le_bytes());
    body.extend_from_slice(&postcard::to_stdvec(build).expect("encode a String"));
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&frame(HELLO, &body));
    out
}

/// The protocol version of this build.
const VERSION: u32 = 4;

/// A correct handshake.
fn good_hello() -> Vec<u8> {
    hello(VERSION, &our_build())
}

fn emit(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).expect("write to the pool");
    out.flush().expect("flush to the pool");
}

/// Stays alive (without reading or writing) until the pool kills us, our
/// parent dies, or 30 s pass.
fn linger() -> ! {
    // SAFETY: getppid(2) cannot fail.
    let parent = unsafe { libc::getppid() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline && unsafe { libc::getppid() } == parent {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::exit(0)
}

/// Waits until the pool has sent something (a task), so a reply can be
/// "for" it.
fn await_call() {
    let mut byte = [0u8; 1];
    let _ = std::io::stdin().read(&mut byte);
}

/// The fake worker, when `FAKE` is set (else this test returns at once).
/// It never returns: libtest would print its report to the pool.
#[test]
fn fake_entry() {
    let Ok(mode) = std::env::var("FAKE") else {
        return;
    };
    match mode.as_str() {
        "garbage" => {
            // No zero byte, so no magic: 100 KiB of it.
            emit(&b"garbage ".repeat(100 << 7));
            linger()
        }
        "garbage-eof" => {
            emit(&b"no handshake here\n".repeat(50));
            std::process::exit(0)
        }
        "hello-then-garbage" => {
            emit(&good_hello());
            emit(b"this is not a frame\n");
            linger()
        }
        "unknown-kind" => {
            emit(&good_hello());
            emit(&frame(0x99, b"??"));
            linger()
        }
        "wrong-first-frame" => {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&frame(RESULT, &0u64.to_le_bytes()));
            emit(&bytes);
            linger()
        }
        "truncated" => {
            emit(&good_hello());
            let mut bytes = 100u32.to_le_bytes().to_vec();
            bytes.push(RESULT);
            bytes.extend_from_slice(&[0; 9]);
            emit(&bytes);
            std::process::exit(0)
        }
        "4gib-eof" => {
            emit(&good_hello());
            emit(&u32::MAX.to_le_bytes());
            std::process::exit(0)
        }
        "4gib-silent" => {
            emit(&good_hello());
            emit(&u32::MAX.to_le_bytes());
            linger()
        }
        "4gib-kind-silent" => {
            emit(&good_hello());
            let mut bytes = u32::MAX.to_le_bytes().to_vec();
            bytes.push(RESULT);
            emit(&bytes);
            linger()
        }
        "1gib-eof" => {
            // Within the 1 GiB limit, backed by 1000 bytes only.
            emit(&good_hello());
            let mut bytes = ((1u32 << 30) - 1).to_le_bytes().to_vec();
            bytes.push(RESULT);
            bytes.extend_from_slice(&[0; 1000]);
            emit(&bytes);
            std::process::exit(0)
        }
        "1gib-hello-silent" => {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&((1u32 << 30) - 1).to_le_bytes());
            bytes.push(HELLO);
            emit(&bytes);
            linger()
        }
        "wrong-version" => {
            emit(&hello(VERSION + 1, &our_build()));
            linger()
        }
        "wrong-build" => {
            emit(&hello(
                VERSION,
                "concurrent-futures 0.0.0-elsewhere 64-bit le",
            ));
            linger()
        }
        "unknown-seq" => {
            emit(&good_hello());
            await_call();
            let mut body = (1u64 << 40).to_le_bytes().to_vec();
            body.extend_from_slice(&0u64.to_le_bytes()); // run time
            body.push(0);
            body.extend_from_slice(&postcard::to_stdvec(&0u64).expect("encode a u64"));
            emit(&frame(RESULT, &body));
            linger()
        }
        "silent" => linger(),
        "close-stdout" => {
            emit(&good_hello());
            // SAFETY: nothing else in this process uses fd 1 any more.
            unsafe { libc::close(1) };
            linger()
        }
        other => panic!("unknown FAKE mode {other}"),
    }
}

/// How a row's fake worker must be refused.
struct Row {
    mode: &'static str,
    /// Words the message must contain besides `worker process <pid> `.
    words: &'static [&'static str],
    restart: bool,
    /// `None`: the default (10 s), and the failure must come within 5 s.
    handshake_timeout: Option<Duration>,
}

fn fake_pool(row: &Row) -> ProcessPoolExecutor {
    let exe = std::env::current_exe().expect("the test binary");
    let mut b = ProcessPoolExecutor::builder()
        .max_workers(1)
        .worker_command(exe)
        .worker_args([
            &*test_path(module_path!(), "fake_entry"),
            "--exact",
            "--nocapture",
            "--quiet",
        ])
        .env("FAKE", row.mode)
        .restart_workers(row.restart);
    if let Some(t) = row.handshake_timeout {
        b = b.handshake_timeout(t);
    }
    b.build().expect("build a process pool")
}

fn run(row: Row) {
    // The peak checked at the end is this row's (see `memory_rows`).
    let _apart = memory_rows();
    reset_peak_rss();
    let started = Instant::now();
    let pool = fake_pool(&row);
    let mut futs = vec![pool.submit(task!(square), 0)];
    let mut pids = pool.worker_pids();
    assert_eq!(pids.len(), 1, "{pids:?}");
    // A fake that already died, but was not judged yet, may be replaced by
    // the next submit; the pool breaks on whichever is judged first, and
    // every process started is checked below.
    for x in 1..3u64 {
        futs.push(pool.submit(task!(square), x));
        pids.extend(pool.worker_pids());
    }
    let mut words = vec!["worker process "];
    words.extend(row.words);
    let msg = broken(&mut futs[0], &words);
    let took = started.elapsed();
    if row.handshake_timeout.is_none() {
        assert!(took < Duration::from_secs(5), "took {took:?}: {msg}");
    }
    // `worker process <pid> ...`: the fake that was refused.
    let named: u32 = msg["worker process ".len()..]
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid at the start of {msg:?}"));
    // The first task is the one the fake "ran"; the others, and a later
    // submit, hear that the worker died under it (unless it died before
    // it ran anything).
    let rest = if msg.contains("while running a task") {
        others(&msg, "submit #0")
    } else {
        msg.clone()
    };
    for f in &mut futs[1..] {
        assert_eq!(broken(f, &[]), rest);
    }
    assert_eq!(broken(&mut pool.submit(task!(square), 9), &[]), rest);
    pids.extend(pool.worker_pids());
    pids.push(named);
    eventually("no live workers", || pool.worker_pids().is_empty());
    drop(pool);
    pids.sort_unstable();
    pids.dedup();
    assert_reaped(&pids);
    let peak = peak_rss();
    assert!(peak < 512 << 20, "peak resident set {peak} bytes");
}

macro_rules! rows {
    ($($name:ident: $mode:literal, [$($w:literal),*] $(, restart = $r:literal)? $(, handshake = $ms:literal ms)?;)*) => {
        $(
            #[test]
            fn $name() {
                #[allow(unused_mut, unused_assignments)]
                let mut restart = false;
                $( restart = $r; )?
                #[allow(unused_mut, unused_assignments)]
                let mut handshake_timeout = None;
                $( handshake_timeout = Some(Duration::from_millis($ms)); )?
                run(Row { mode: $mode, words: &[$($w),*], restart, handshake_timeout });
            }
        )*
    };
}

rows! {
    garbage_instead_of_the_handshake: "garbage",
        ["killed by signal SIGKILL", "more than 65536 bytes of other output instead of the handshake",
         "concurrent_futures::init()"];
    garbage_then_eof_instead_of_the_handshake: "garbage-eof",
        ["exited with code 0", "closed its output before the handshake", "concurrent_futures::init()"];
    handshake_then_garbage: "hello-then-garbage",
        ["killed by signal SIGKILL", "protocol error", "exceeds the limit of 1073741824 bytes"];
    handshake_then_an_unknown_frame_kind: "unknown-kind",
        ["killed by signal SIGKILL", "protocol error", "kind 0x99"];
    a_result_frame_instead_of_the_handshake: "wrong-first-frame",
        ["killed by signal SIGKILL", "expected the handshake, got frame kind 0x82"];
    a_truncated_frame_then_eof: "truncated",
        ["exited with code 0", "the stream ended inside a frame (10 of 100 bytes)"];
    a_4_gib_length_then_eof: "4gib-eof",
        ["a frame of 4294967295 bytes exceeds the limit"];
    a_4_gib_length_then_nothing: "4gib-silent",
        ["killed by signal SIGKILL", "a frame of 4294967295 bytes exceeds the limit"];
    a_4_gib_length_and_kind_then_nothing: "4gib-kind-silent",
        ["killed by signal SIGKILL", "a frame of 4294967295 bytes exceeds the limit"];
    a_1_gib_length_backed_by_1000_bytes_then_eof: "1gib-eof",
        ["exited with code 0", "the stream ended inside a frame (1001 of 1073741823 bytes)"];
    a_1_gib_hello_that_never_arrives_times_out: "1gib-hello-silent",
        ["killed by signal SIGKILL", "did not answer the handshake within 500ms"], handshake = 500 ms;
    a_wrong_protocol_version: "wrong-version",
        ["killed by signal SIGKILL", "the worker speaks protocol version 5, this pool 4"];
    a_wrong_build_identity: "wrong-build",
        ["killed by signal SIGKILL",
         "the worker is another build (concurrent-futures 0.0.0-elsewhere 64-bit le)"];
    a_result_for_a_sequence_number_never_sent: "unknown-seq",
        ["killed by signal SIGKILL", "a result for unknown task 1099511627776"];
    no_handshake_at_all_times_out: "silent",
        ["killed by signal SIGKILL", "did not answer the handshake within 500ms",
         "concurrent_futures::init()"], handshake = 500 ms;
    handshake_then_stdout_closed_while_alive: "close-stdout",
        ["killed by signal SIGKILL", "it closed its output but did not exit within 2s"];

    // A worker that cannot even start would fail the same way again: the
    // pool breaks even when it would otherwise replace dead workers.
    wrong_build_breaks_the_pool_despite_restart: "wrong-build",
        ["the worker is another build"], restart = true;
    no_handshake_breaks_the_pool_despite_restart: "silent",
        ["did not answer the handshake within 500ms"], restart = true, handshake = 500 ms;
    garbage_breaks_the_pool_despite_restart: "garbage-eof",
        ["closed its output before the handshake"], restart = true;
}
