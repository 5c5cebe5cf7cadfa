//! The frames between a pool and a host agent (`serve.rs`): the worker
//! protocol's frames (`process/frame.rs`), with kinds of their own. Every
//! frame about a worker carries the `u32` tag the pool gave it; the bytes
//! a worker reads and writes travel inside `Data` and `Output` frames
//! unchanged, so the agent never parses the worker protocol.
//! `docs/design.md` describes every kind.

use crate::process::frame::{begin_frame, end_frame, Body, Frame};
use crate::Error;

// Pool -> agent.
/// `u32 tag`, postcard `(args, env)` as bytes: start a worker.
const SPAWN: u8 = 0x10;
/// `u32 tag`, bytes for the worker's stdin.
const DATA: u8 = 0x11;
/// `u32 tag`: close the worker's stdin (it finishes what it holds).
const CLOSE: u8 = 0x12;
/// `u32 tag`, `u8 signal` (9 or 15): signal the worker.
const SIGNAL: u8 = 0x13;
/// Nothing: the pool is alive.
const PING: u8 = 0x14;

// Agent -> pool.
/// `u32 tag`, `u32 pid`: the worker started.
const STARTED: u8 = 0x90;
/// `u32 tag`, postcard message: the worker could not be started.
const SPAWN_FAILED: u8 = 0x91;
/// `u32 tag`, `u8 stream` (1 stdout, 2 stderr), bytes; no bytes: that
/// stream ended.
const OUTPUT: u8 = 0x92;
/// `u32 tag`, `i32` wait status: the worker exited and was reaped.
const EXITED: u8 = 0x93;
/// Nothing: the agent is alive.
const PONG: u8 = 0x94;

/// The most bytes one `Data` or `Output` frame carries; longer writes are
/// cut into several.
pub(crate) const MAX_DATA: usize = 1 << 20;

/// The signals a pool may send a worker through its agent.
pub(crate) const SIGKILL: u8 = 9;
/// See [`SIGKILL`].
pub(crate) const SIGTERM: u8 = 15;

/// Which output of a worker an `Output` frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// A worker's command line and environment, as bytes.
pub(crate) type Command = (Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

/// A message from the pool to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ToAgent<'a> {
    /// Start worker `tag`: this executable with these arguments and
    /// environment variables (on top of the agent's own).
    Spawn {
        tag: u32,
        args: Vec<Vec<u8>>,
        env: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Bytes for worker `tag`'s stdin.
    Data { tag: u32, bytes: &'a [u8] },
    /// Close worker `tag`'s stdin.
    Close { tag: u32 },
    /// Send worker `tag` a signal ([`SIGKILL`] or [`SIGTERM`]).
    Signal { tag: u32, signal: u8 },
    /// Keeps an idle link alive.
    Ping,
}

/// A message from an agent to the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FromAgent<'a> {
    /// Worker `tag` runs as process `pid` on the agent's host.
    Started { tag: u32, pid: u32 },
    /// Worker `tag` could not be started, and why.
    SpawnFailed { tag: u32, error: String },
    /// Bytes worker `tag` wrote; empty once the stream ended.
    Output {
        tag: u32,
        stream: Stream,
        bytes: &'a [u8],
    },
    /// Worker `tag` exited with this wait status (as `waitpid` gives it).
    Exited { tag: u32, status: i32 },
    /// Keeps an idle link alive.
    Pong,
}

impl ToAgent<'_> {
    /// Appends the message as one frame.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the frame would exceed the frame limit; `buf`
    /// is then left as it was.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), Error> {
        let start = buf.len();
        let mut framed = || {
            let (kind, tag) = match self {
                ToAgent::Spawn { tag, .. } => (SPAWN, Some(tag)),
                ToAgent::Data { tag, .. } => (DATA, Some(tag)),
                ToAgent::Close { tag } => (CLOSE, Some(tag)),
                ToAgent::Signal { tag, .. } => (SIGNAL, Some(tag)),
                ToAgent::Ping => (PING, None),
            };
            let frame = begin_frame(buf, kind);
            if let Some(tag) = tag {
                buf.extend_from_slice(&tag.to_le_bytes());
            }
            match self {
                ToAgent::Spawn { args, env, .. } => {
                    postcard::to_io(&(args, env), &mut *buf).map_err(|e| {
                        Error::Codec(format!("cannot encode a worker command: {e}"))
                    })?;
                }
                ToAgent::Data { bytes, .. } => buf.extend_from_slice(bytes),
                ToAgent::Signal { signal, .. } => buf.push(*signal),
                ToAgent::Close { .. } | ToAgent::Ping => {}
            }
            end_frame(buf, frame)
        };
        framed().inspect_err(|_| buf.truncate(start))
    }

    /// Decodes a frame the agent reads.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for an unknown kind or a malformed body.
    pub(crate) fn decode(frame: &Frame) -> Result<ToAgent<'_>, Error> {
        let mut body = Body::new(&frame.body);
        if frame.kind == PING {
            return Ok(ToAgent::Ping);
        }
        let tag = body.u32("worker tag")?;
        match frame.kind {
            SPAWN => {
                let (args, env): Command = postcard::from_bytes(body.rest())
                    .map_err(|e| Error::Protocol(format!("a malformed worker command: {e}")))?;
                Ok(ToAgent::Spawn { tag, args, env })
            }
            DATA => Ok(ToAgent::Data {
                tag,
                bytes: body.rest(),
            }),
            CLOSE => Ok(ToAgent::Close { tag }),
            SIGNAL => match body.u8("signal")? {
                signal @ (SIGKILL | SIGTERM) => Ok(ToAgent::Signal { tag, signal }),
                other => Err(Error::Protocol(format!("a request for signal {other}"))),
            },
            other => Err(Error::Protocol(format!(
                "an unknown agent frame kind {other:#x}"
            ))),
        }
    }
}

impl FromAgent<'_> {
    /// Appends the message as one frame.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] if the frame would exceed the frame limit; `buf`
    /// is then left as it was.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) -> Result<(), Error> {
        let start = buf.len();
        let mut framed = || {
            let (kind, tag) = match self {
                FromAgent::Started { tag, .. } => (STARTED, Some(tag)),
                FromAgent::SpawnFailed { tag, .. } => (SPAWN_FAILED, Some(tag)),
                FromAgent::Output { tag, .. } => (OUTPUT, Some(tag)),
                FromAgent::Exited { tag, .. } => (EXITED, Some(tag)),
                FromAgent::Pong => (PONG, None),
            };
            let frame = begin_frame(buf, kind);
            if let Some(tag) = tag {
                buf.extend_from_slice(&tag.to_le_bytes());
            }
            match self {
                FromAgent::Started { pid, .. } => buf.extend_from_slice(&pid.to_le_bytes()),
                FromAgent::SpawnFailed { error, .. } => {
                    postcard::to_io(error, &mut *buf)
                        .map_err(|e| Error::Codec(format!("cannot encode a message: {e}")))?;
                }
                FromAgent::Output { stream, bytes, .. } => {
                    buf.push(match stream {
                        Stream::Stdout => 1,
                        Stream::Stderr => 2,
                    });
                    buf.extend_from_slice(bytes);
                }
                FromAgent::Exited { status, .. } => buf.extend_from_slice(&status.to_le_bytes()),
                FromAgent::Pong => {}
            }
            end_frame(buf, frame)
        };
        framed().inspect_err(|_| buf.truncate(start))
    }

    /// Decodes a frame the pool reads from an agent.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] for an unknown kind or a malformed body.
    pub(crate) fn decode(frame: &Frame) -> Result<FromAgent<'_>, Error> {
        let mut body = Body::new(&frame.body);
        if frame.kind == PONG {
            return Ok(FromAgent::Pong);
        }
        let tag = body.u32("worker tag")?;
        match frame.kind {
            STARTED => Ok(FromAgent::Started {
                tag,
                pid: body.u32("pid")?,
            }),
            SPAWN_FAILED => Ok(FromAgent::SpawnFailed {
                tag,
                error: postcard::from_bytes(body.rest())
                    .map_err(|e| Error::Protocol(format!("a malformed spawn error: {e}")))?,
            }),
            OUTPUT => {
                let stream = match body.u8("stream")? {
                    1 => Stream::Stdout,
                    2 => Stream::Stderr,
                    s => return Err(Error::Protocol(format!("an unknown output stream {s}"))),
                };
                Ok(FromAgent::Output {
                    tag,
                    stream,
                    bytes: body.rest(),
                })
            }
            EXITED => {
                let raw = body.u32("wait status")?;
                Ok(FromAgent::Exited {
                    tag,
                    status: i32::from_le_bytes(raw.to_le_bytes()),
                })
            }
            other => Err(Error::Protocol(format!(
                "an unknown agent frame kind {other:#x}"
            ))),
        }
    }
}

/// Appends the header of a `Data` frame for `len` bytes that the caller
/// writes itself right after (a big write is not copied).
pub(crate) fn data_header(buf: &mut Vec<u8>, tag: u32, len: usize) {
    debug_assert!(len <= MAX_DATA);
    let frame_len = (1 + 4 + len) as u32;
    buf.extend_from_slice(&frame_len.to_le_bytes());
    buf.push(DATA);
    buf.extend_from_slice(&tag.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::frame::one_frame;

    #[test]
    fn every_message_round_trips() {
        let to = [
            ToAgent::Spawn {
                tag: 7,
                args: vec![b"entry".to_vec(), b"--exact".to_vec()],
                env: vec![(b"K".to_vec(), b"v".to_vec())],
            },
            ToAgent::Data {
                tag: 1,
                bytes: b"abc",
            },
            ToAgent::Close { tag: 2 },
            ToAgent::Signal {
                tag: 3,
                signal: SIGKILL,
            },
            ToAgent::Ping,
        ];
        for m in to {
            let mut buf = Vec::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(ToAgent::decode(&one_frame(&buf)).unwrap(), m);
        }
        let from = [
            FromAgent::Started { tag: 1, pid: 99 },
            FromAgent::SpawnFailed {
                tag: 2,
                error: "no such file".into(),
            },
            FromAgent::Output {
                tag: 3,
                stream: Stream::Stderr,
                bytes: b"panicked",
            },
            FromAgent::Output {
                tag: 3,
                stream: Stream::Stdout,
                bytes: b"",
            },
            FromAgent::Exited { tag: 4, status: -1 },
            FromAgent::Pong,
        ];
        for m in from {
            let mut buf = Vec::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(FromAgent::decode(&one_frame(&buf)).unwrap(), m);
        }
    }

    #[test]
    fn a_data_header_frames_the_bytes_after_it() {
        let mut buf = Vec::new();
        data_header(&mut buf, 5, 3);
        buf.extend_from_slice(b"xyz");
        let frame = one_frame(&buf);
        assert_eq!(
            ToAgent::decode(&frame).unwrap(),
            ToAgent::Data {
                tag: 5,
                bytes: b"xyz"
            }
        );
    }

    #[test]
    fn malformed_frames_are_protocol_errors() {
        let bad = [
            Frame {
                kind: SIGNAL,
                body: vec![1, 0, 0, 0, 2],
            },
            Frame {
                kind: 0x55,
                body: vec![1, 0, 0, 0],
            },
            Frame {
                kind: DATA,
                body: vec![1, 0],
            },
            Frame {
                kind: SPAWN,
                body: vec![1, 0, 0, 0, 0xff],
            },
        ];
        for f in &bad {
            assert!(
                matches!(ToAgent::decode(f), Err(Error::Protocol(_))),
                "{f:?}"
            );
        }
        let bad = [
            Frame {
                kind: OUTPUT,
                body: vec![1, 0, 0, 0, 3],
            },
            Frame {
                kind: EXITED,
                body: vec![1, 0, 0, 0, 1],
            },
            Frame {
                kind: 0x10,
                body: vec![1, 0, 0, 0],
            },
        ];
        for f in &bad {
            assert!(
                matches!(FromAgent::decode(f), Err(Error::Protocol(_))),
                "{f:?}"
            );
        }
    }
}
