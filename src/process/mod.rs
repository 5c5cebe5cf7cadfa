//! The process pool: [`ProcessPoolExecutor`], its wire protocol, the worker
//! side ([`init`]) and the launcher.

mod builder;
mod conn;
pub(crate) mod fuzz;
mod launcher;
mod pool;
mod protocol;
pub(crate) use protocol::WORKER_ENV;
mod worker;

pub use builder::ProcessPoolBuilder;
pub use pool::ProcessPoolExecutor;
pub use worker::init;
