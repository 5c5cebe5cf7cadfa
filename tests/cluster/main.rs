//! Workers on other machines, one test binary, against the real daemons of
//! `scripts/test-cluster` (two loopback sshds, a one-node Slurm): the
//! conformance suite over every launcher (`conformance`), what fails and
//! how (`faults`), and a Slurm node set DOWN (`node_down`, which runs on its
//! own: see there). See `tests/README.md` for how to run them.
//!
//! Workers are this test binary, run again (or shipped and run) as
//! `worker_entry`.

#[path = "../cluster_common/mod.rs"]
mod cluster_common;
#[path = "../common/mod.rs"]
mod common;
#[path = "../process_common/mod.rs"]
mod process_common;

mod agents;
mod conformance;
mod faults;
mod launch;
mod links;
mod node_down;
mod srun_io;

// Pools that set no `worker_args` (`launch`'s) run this entry; the others
// (`process_common::builder`) run `worker_entry`.
concurrent_futures::test_worker!();

/// The worker side: `init()` serves tasks when this binary runs as a worker.
#[test]
fn worker_entry() {
    concurrent_futures::init();
}
