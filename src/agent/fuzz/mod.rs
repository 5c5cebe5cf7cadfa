//! Entry points for the agent's fuzz targets (`fuzz/`), the corpus test
//! (`tests/fuzz_corpus.rs`) and the agent's process tests
//! (`tests/process/agent.rs`): the agent's dispatch over arbitrary frames,
//! against a fake host that records what it was asked (`dispatch.rs`); the
//! pool's link reader over arbitrary agent output, against workers
//! registered as a link registers them (`link_reader.rs`); and the frames a
//! test speaks to a real agent (`messages.rs`).
//! Hidden from the docs; not part of the API.

mod dispatch;
mod link_reader;
mod messages;

/// For the dispatch tests of `serve.rs`.
#[cfg(test)]
pub(crate) use dispatch::Fake;
pub use dispatch::{agent_seeds, agent_side};
pub use link_reader::{link_seeds, link_side};
pub use messages::{read_agent_reply, AgentReply, AgentRequest};
