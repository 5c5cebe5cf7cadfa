//! Entry points for the fuzz targets in `fuzz/` and for the test that
//! replays their corpus (`tests/fuzz_corpus.rs`): the wire code of both
//! ends of the pipe, run over arbitrary bytes. Hidden from the docs; not
//! part of the API.
//!
//! Bad input is expected and only ends the run. An `Err` from these
//! functions means something worse: the code broke one of its own
//! promises (a completed future that is not done, a reply the worker
//! wrote that the pool would refuse). Panics, hangs and allocations out of
//! proportion to the input are the fuzzer's to find.

use std::collections::HashMap;

use super::child::{run_frames, Registry};
use super::inbox::Inbox;
use super::job::Completion;
use super::protocol::{
    build_identity, read_frame, skip_to_magic, FromWorker, ToWorker, PROTOCOL_VERSION,
};
use super::reader::handshake;
use crate::task::{decode, ErasedTask, TaskEntry};
use crate::{Error, InitResult, Promise};

/// The value type of the futures [`pool_side`] completes.
type Value = (u64, String);

/// How many tasks [`pool_side`] has in flight: sequence numbers `0..INFLIGHT`.
const INFLIGHT: u64 = 4;

/// Reads frames from `data` until its end or the first error, decoding the
/// replies among them as the pool would; also looks for the handshake
/// magic in it. Returns how many frames were read.
pub fn frames(data: &[u8]) -> usize {
    let mut r = data;
    let mut n = 0;
    while let Ok(Some(frame)) = read_frame(&mut r) {
        n += 1;
        let _ = FromWorker::decode(&frame);
        let _ = ToWorker::decode(&frame);
    }
    let _ = skip_to_magic(&mut &data[..]);
    n
}

/// Runs the pool's side over `data` as a worker's output: the handshake,
/// then replies for 4 tasks (sequence numbers 0 to 3) of type
/// `(u64, String)` and for an initializer returning `Result<(), String>`,
/// each completing its future through the pool's own code. Returns how
/// many futures the replies completed.
///
/// # Errors
///
/// A broken invariant: a completed future is not done, or finished with
/// an error that says it is pending, cancelled or already taken.
pub fn pool_side(data: &[u8]) -> Result<usize, String> {
    let mut r = data;
    if handshake(&mut r, "worker").is_err() {
        return Ok(0);
    }
    let mut inflight: HashMap<u64, Promise<Value>> = HashMap::new();
    let mut futures = Vec::new();
    for seq in 0..INFLIGHT {
        let (promise, future) = Promise::new();
        inflight.insert(seq, promise);
        futures.push(future);
    }
    let mut completed = 0;
    while let Ok(Some(frame)) = read_frame(&mut r) {
        match FromWorker::decode(&frame) {
            Ok(FromWorker::Result { seq, outcome, .. }) => {
                // The real pool ends the worker on a result for a task it
                // does not hold; so do we.
                let Some(promise) = inflight.remove(&seq) else {
                    break;
                };
                Completion::finish(Box::new(promise), outcome, &mut |_| {});
                completed += 1;
            }
            // Nothing was recalled here: the real pool refuses an answer to
            // a recall it never sent, and a second handshake.
            Ok(FromWorker::Hello { .. } | FromWorker::Recalled { .. }) => break,
            Ok(FromWorker::InitDone(outcome)) => {
                // What `ProcessPoolBuilder::initializer` judges with.
                let _verdict = outcome.map_err(|e| e.to_string()).and_then(|bytes| {
                    decode::<Result<(), String>>(bytes)
                        .map_err(|e| e.to_string())
                        .and_then(InitResult::into_init_result)
                });
            }
            Err(_) => break,
        }
    }
    // What the real pool does with the rest when the worker's output ends.
    for (_, promise) in inflight {
        Completion::finish(
            Box::new(promise),
            Err(Error::BrokenPool("gone".into())),
            &mut |_| {},
        );
    }
    for (i, future) in futures.into_iter().enumerate() {
        if !future.done() {
            return Err(format!("future {i} is not done after its completion"));
        }
        // No reply may make a finished future look pending, cancelled
        // (nothing cancels here) or already taken.
        if let Err(e @ (Error::Timeout { .. } | Error::Cancelled | Error::AlreadyTaken)) =
            future.result()
        {
            return Err(format!("future {i} finished with {e:?}"));
        }
    }
    Ok(completed)
}

/// Runs the worker's side over `data` as the pool's input: every frame read
/// from it goes through the worker's dispatch loop (the tasks are the
/// [`fuzz_tasks`] below), and every frame the worker writes back is checked
/// to be one the pool accepts. Returns how many replies it wrote.
///
/// # Errors
///
/// A broken invariant: the worker wrote a frame the pool would refuse, or
/// a reply to a call it was never sent.
pub fn worker_side(data: &[u8]) -> Result<usize, String> {
    // The frames go through the worker's inbox, as its reader thread
    // hands them over: recalls are answered there, the rest queued.
    let inbox = Inbox::<std::io::Empty>::new(None);
    let mut calls = Vec::new();
    let mut written: Vec<u8> = Vec::new();
    let mut r = data;
    loop {
        let frame = match read_frame(&mut r) {
            Ok(Some(frame)) => frame,
            Ok(None) => break inbox.close(Ok(())),
            Err(e) => break inbox.close(Err(e)),
        };
        if let Ok(ToWorker::Call { seq, .. }) = ToWorker::decode(&frame) {
            calls.push(seq);
        }
        let answered = inbox.deliver([frame], &mut |answer: &[u8]| {
            written.extend_from_slice(answer);
            Ok(())
        });
        if let Err(e) = answered {
            break inbox.close(Err(e));
        }
    }
    let registry = Registry::of(fuzz_tasks().iter().copied());
    // An error only means the input broke the protocol: the worker exits.
    let _ = run_frames(
        &registry,
        || inbox.next(&mut |_: &[u8]| Ok(())),
        |frame| {
            written.extend_from_slice(frame);
            Ok(())
        },
    );
    let mut out = &written[..];
    let mut replies = 0;
    loop {
        let frame = match read_frame(&mut out) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(replies),
            Err(e) => return Err(format!("the worker wrote a bad frame: {e}")),
        };
        match FromWorker::decode(&frame) {
            Ok(FromWorker::Result { seq, .. }) if !calls.contains(&seq) => {
                return Err(format!("the worker answered call {seq}, never sent"))
            }
            Ok(FromWorker::Recalled {
                seq,
                given_back: true,
            }) if !calls.contains(&seq) => {
                return Err(format!("the worker gave back call {seq}, never sent"))
            }
            Ok(_) => replies += 1,
            Err(e) => return Err(format!("the worker wrote a reply the pool refuses: {e}")),
        }
    }
}

/// Reads a worker's (or an agent's) handshake as the pool does; returns
/// the pid it gives.
///
/// # Errors
///
/// The pool's refusal, described.
pub fn read_hello(r: &mut impl std::io::BufRead) -> Result<u32, String> {
    handshake(r, "worker").map_err(|e| e.to_string())
}

/// The frames that declare `task` as id 0 and call it on `arg` as call 0,
/// as the pool writes them to a worker.
///
/// # Errors
///
/// `arg` does not encode.
pub fn call_frames<A: serde::Serialize, R>(
    task: crate::Task<A, R>,
    arg: &A,
) -> Result<Vec<u8>, String> {
    let entry = task.entry();
    let mut buf = declare(0, entry);
    let mut value = Vec::new();
    crate::task::encode_into(arg, &mut value).map_err(|e| e.to_string())?;
    buf.extend(call(0, 0, false, &value));
    Ok(buf)
}

/// Reads a worker's answer to call 0 of [`call_frames`] from `bytes` (its
/// output after the handshake): `Ok(None)` while the frame is incomplete.
///
/// # Errors
///
/// Another frame, a failed call or a result of another type.
pub fn read_call_result<R: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Option<R>, String> {
    let Ok(Some(frame)) = read_frame(&mut &bytes[..]) else {
        return Ok(None);
    };
    match FromWorker::decode(&frame).map_err(|e| e.to_string())? {
        FromWorker::Result {
            seq: 0,
            outcome: Ok(value),
            ..
        } => decode(value).map(Some).map_err(|e| e.to_string()),
        other => Err(format!("not the answer to call 0: {other:?}")),
    }
}

fn divide(a: u32, b: u32) -> u32 {
    // Panics on `b == 0`: the worker turns that into an error reply.
    a / b
}

fn concat(parts: Vec<String>) -> String {
    parts.concat()
}

fn nothing() {}

fn init_check(ok: bool) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err("refused".to_string())
    }
}

/// The tasks the fuzzed worker knows. Not in the `task!` registry, so no
/// program that links this crate gains them.
pub fn fuzz_tasks() -> &'static [&'static dyn ErasedTask] {
    static TASKS: [&dyn ErasedTask; 4] = [
        &TaskEntry::new(divide, "fuzz"),
        &TaskEntry::new(concat, "fuzz"),
        &TaskEntry::new(nothing, "fuzz"),
        &TaskEntry::new(init_check, "fuzz"),
    ];
    &TASKS
}

fn to_worker(message: ToWorker<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    // Seeds are small; the limit is far away.
    let _ = message.encode(&mut buf);
    buf
}

fn from_worker(message: FromWorker<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = message.encode(&mut buf);
    buf
}

fn wire<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

/// A raw frame, for seeds no message can express.
fn raw(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut buf = ((body.len() + 1) as u32).to_le_bytes().to_vec();
    buf.push(kind);
    buf.extend_from_slice(body);
    buf
}

fn result(seq: u64, outcome: Result<&[u8], Error>) -> Vec<u8> {
    from_worker(FromWorker::Result {
        seq,
        run_ns: 1000 * seq,
        outcome,
    })
}

/// The handshake a worker of this build writes, magic included.
fn hello() -> Vec<u8> {
    from_worker(FromWorker::Hello {
        version: PROTOCOL_VERSION,
        pid: 4242,
        build: build_identity(),
    })
}

fn declare(id: u32, task: &dyn ErasedTask) -> Vec<u8> {
    to_worker(ToWorker::Declare {
        id,
        name: task.name(),
        signature: task.signature(),
    })
}

fn call(seq: u64, id: u32, chunk: bool, arg: &[u8]) -> Vec<u8> {
    to_worker(ToWorker::Call {
        seq,
        id,
        chunk,
        arg,
    })
}

fn recall(seq: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = ToWorker::Recall { seq }.encode(&mut buf);
    buf
}

fn init(id: u32, arg: &[u8]) -> Vec<u8> {
    to_worker(ToWorker::Init { id, arg })
}

/// Well-formed inputs for the fuzz target `target` (`frame_decoder`,
/// `pool_handshake`, `worker_dispatch` or `agent_dispatch`), built by this build so that the
/// handshake's build identity and the task names match: starting points
/// for the fuzzer, replayed by the corpus test.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let ok = |seq: u64, s: &str| result(seq, Ok(&wire(&(seq, s.to_string()))));
    let failed = |seq: u64, e: Error| result(seq, Err(e));
    let panicked = Error::Panicked {
        message: "boom".into(),
        location: Some("src/main.rs:1:1".into()),
        backtrace: None,
    };
    let pool = vec![
        hello(),
        [b"running 1 test\n".to_vec(), hello(), ok(0, "zero")].concat(),
        [
            hello(),
            ok(0, "a"),
            ok(1, "b"),
            failed(2, panicked),
            ok(3, "d"),
        ]
        .concat(),
        [
            hello(),
            from_worker(FromWorker::InitDone(Ok(&[0]))),
            ok(0, "x"),
        ]
        .concat(),
        [
            hello(),
            from_worker(FromWorker::InitDone(Err(Error::Codec("x".into())))),
            failed(0, Error::Codec("x".into())),
        ]
        .concat(),
        [hello(), ok(7, "unknown task")].concat(),
        [hello(), raw(0x82, &[0; 17][..]), raw(0x82, &[9; 17][..])].concat(),
        // An answer to a recall the pool never sent.
        [
            hello(),
            from_worker(FromWorker::Recalled {
                seq: 1,
                given_back: true,
            }),
            ok(0, "a"),
        ]
        .concat(),
    ];
    let tasks = fuzz_tasks();
    let worker = vec![
        [
            declare(0, tasks[0]),
            call(1, 0, false, &wire(&(84u32, 2u32))),
        ]
        .concat(),
        [
            declare(0, tasks[0]),
            call(1, 0, false, &wire(&(1u32, 0u32))),
            call(2, 0, true, &wire(&vec![(9u32, 3u32), (1, 1)])),
        ]
        .concat(),
        [
            declare(5, tasks[1]),
            call(10, 5, false, &wire(&vec!["a", "b"])),
            call(11, 5, true, &wire(&vec![vec!["c"], vec![]])),
            call(12, 6, false, b""),
        ]
        .concat(),
        [
            declare(0, tasks[3]),
            init(0, &[1]),
            declare(1, tasks[2]),
            call(3, 1, false, b""),
        ]
        .concat(),
        [declare(0, tasks[3]), init(0, &[0])].concat(),
        [raw(1, &[0, 0, 0, 0, 3, b'a', b'b', b'c', 0])].concat(),
        // Recalls: of a queued call (given back), of one never sent, and
        // a malformed one.
        [
            declare(0, tasks[0]),
            call(1, 0, false, &wire(&(84u32, 2u32))),
            call(2, 0, false, &wire(&(8u32, 2u32))),
            recall(2),
            recall(9),
            raw(4, &[1, 2]),
        ]
        .concat(),
    ];
    match target {
        "pool_handshake" => pool,
        "worker_dispatch" => worker,
        "frame_decoder" => pool.into_iter().chain(worker).collect(),
        "agent_dispatch" => crate::agent::fuzz::agent_seeds(),
        _ => Vec::new(),
    }
}
