//! The frames a test speaks to a real agent: [`AgentRequest`] as it
//! writes them, [`AgentReply`] as it reads them.

use std::io::BufRead;

use crate::agent::frames::{data_header, FromAgent, Stream, ToAgent, MAX_DATA, SIGKILL, SIGTERM};
use crate::process::frame::{read_frame, Frame};

/// A frame to an agent, as a test writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentRequest {
    /// Start worker `tag` with these arguments and environment.
    Spawn {
        /// The worker's tag.
        tag: u32,
        /// Its arguments.
        args: Vec<String>,
        /// Its environment, on top of the agent's.
        env: Vec<(String, String)>,
    },
    /// Bytes for worker `tag`'s stdin.
    Data {
        /// The worker's tag.
        tag: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Close worker `tag`'s stdin.
    Close {
        /// The worker's tag.
        tag: u32,
    },
    /// Send worker `tag` signal 9 (`true`) or 15.
    Signal {
        /// The worker's tag.
        tag: u32,
        /// `true` for SIGKILL, `false` for SIGTERM.
        kill: bool,
    },
    /// Keep the link alive.
    Ping,
}

impl AgentRequest {
    /// The request as one frame.
    pub fn encode(&self) -> Vec<u8> {
        let message = match self {
            AgentRequest::Spawn { tag, args, env } => ToAgent::Spawn {
                tag: *tag,
                args: args.iter().map(|a| a.as_bytes().to_vec()).collect(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
            },
            AgentRequest::Data { tag, bytes } if bytes.len() <= MAX_DATA => {
                // As the pool writes it: the header, then the bytes.
                let mut buf = Vec::with_capacity(9 + bytes.len());
                data_header(&mut buf, *tag, bytes.len());
                buf.extend_from_slice(bytes);
                return buf;
            }
            AgentRequest::Data { tag, bytes } => ToAgent::Data { tag: *tag, bytes },
            AgentRequest::Close { tag } => ToAgent::Close { tag: *tag },
            AgentRequest::Signal { tag, kill } => ToAgent::Signal {
                tag: *tag,
                signal: if *kill { SIGKILL } else { SIGTERM },
            },
            AgentRequest::Ping => ToAgent::Ping,
        };
        let mut buf = Vec::new();
        // Test frames are small; the limit is far away.
        let _ = message.encode(&mut buf);
        buf
    }
}

/// A frame from an agent, as a test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentReply {
    /// Worker `tag` runs as `pid`.
    Started {
        /// The worker's tag.
        tag: u32,
        /// Its pid.
        pid: u32,
    },
    /// Worker `tag` could not start.
    SpawnFailed {
        /// The worker's tag.
        tag: u32,
        /// Why.
        error: String,
    },
    /// Output of worker `tag`; empty at the end of the stream.
    Output {
        /// The worker's tag.
        tag: u32,
        /// `true` for stderr, `false` for stdout.
        stderr: bool,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Worker `tag` exited with this raw wait status.
    Exited {
        /// The worker's tag.
        tag: u32,
        /// The raw wait status.
        status: i32,
    },
    /// The agent is alive.
    Pong,
}

/// Reads one frame from an agent; `Ok(None)` at the end of its output.
///
/// # Errors
///
/// A malformed frame, described.
pub fn read_agent_reply(r: &mut impl BufRead) -> Result<Option<AgentReply>, String> {
    let Some(frame): Option<Frame> = read_frame(r).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let reply = match FromAgent::decode(&frame).map_err(|e| e.to_string())? {
        FromAgent::Started { tag, pid } => AgentReply::Started { tag, pid },
        FromAgent::SpawnFailed { tag, error } => AgentReply::SpawnFailed { tag, error },
        FromAgent::Output { tag, stream, bytes } => AgentReply::Output {
            tag,
            stderr: stream == Stream::Stderr,
            bytes: bytes.to_vec(),
        },
        FromAgent::Exited { tag, status } => AgentReply::Exited { tag, status },
        FromAgent::Pong => AgentReply::Pong,
    };
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_read_back_as_written() {
        let mut buf = Vec::new();
        FromAgent::Output {
            tag: 4,
            stream: Stream::Stderr,
            bytes: b"oops",
        }
        .encode(&mut buf)
        .unwrap();
        FromAgent::Exited { tag: 4, status: 9 }
            .encode(&mut buf)
            .unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_agent_reply(&mut r).unwrap(),
            Some(AgentReply::Output {
                tag: 4,
                stderr: true,
                bytes: b"oops".to_vec()
            })
        );
        assert_eq!(
            read_agent_reply(&mut r).unwrap(),
            Some(AgentReply::Exited { tag: 4, status: 9 })
        );
        assert_eq!(read_agent_reply(&mut r).unwrap(), None);
    }
}
