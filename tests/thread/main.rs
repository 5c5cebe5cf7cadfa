//! The in-process API, one test binary: `Future` and `Promise`,
//! `as_completed`, `wait`, and `ThreadPoolExecutor` (submit, map,
//! shutdown), plus the compile-time `Send`/`Sync` checks of the public types.
//! Nothing here starts a process pool, so this binary has no worker entry;
//! `scripts/deep-check miri` runs it under Miri. See `tests/README.md`.

#[path = "../common/mod.rs"]
mod common;

mod as_completed;
mod future;
mod map;
mod pool;
mod send_sync;
mod shutdown;
mod wait;
