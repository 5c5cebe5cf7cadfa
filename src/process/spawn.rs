//! Starting a worker: the launch (through the pool's launcher, without
//! the pool's lock) and its writer and reader threads. `shared.rs` decides
//! when; this carries it out.

use std::sync::Arc;
use std::thread;

use super::launcher::launch;
use super::link::Fate;
use super::reader::read_loop;
use super::shared::Shared;
use super::worker::Worker;
use super::writer::write_loop;
use crate::lifecycle::fail_all;

/// Launches a worker into a reserved slot and starts its threads. If
/// it cannot start and no worker is left to take the queued jobs, they
/// fail with the reason.
pub(super) fn start_worker(shared: &Arc<Shared>) {
    let launched = launch(shared.config.launcher.as_ref(), &shared.config.spec);
    let mut st = shared.state.lock();
    st.starting -= 1;
    shared.changed.notify_all();
    let launched = match launched {
        Ok(l) => {
            st.launch_failed = false;
            l
        }
        Err(e) => {
            st.launch_failed = true;
            st.last_error = Some(e.to_string());
            tracing::warn!(target: "concurrent_futures", error = %e, "worker launch failed");
            if st.workers.is_empty() && st.starting == 0 {
                let queued = std::mem::take(&mut st.queue);
                drop(st);
                fail_all(queued, &e);
            }
            return;
        }
    };
    st.threads.join_finished();
    let me = Arc::downgrade(shared);
    let worker = Worker::new(
        launched.process,
        launched.label,
        launched.tail,
        launched.stderr_thread,
        Arc::new(move || {
            if let Some(shared) = me.upgrade() {
                shared.wake_for_recall();
            }
        }),
    );
    st.workers.push(Arc::clone(&worker));
    let broken = st.broken.is_some();
    drop(st);
    if broken {
        worker.stop(Fate::Stopped("stopped because the pool broke".into()), true);
    }
    let name = worker
        .pid
        .map_or_else(|| "remote".to_string(), |p| p.to_string());
    let start = |role: &str, f: Box<dyn FnOnce() + Send>| {
        thread::Builder::new()
            .name(format!("concurrent-futures-{role}-{name}"))
            .spawn(f)
    };
    let (s, w, stdin) = (Arc::clone(shared), Arc::clone(&worker), launched.stdin);
    let writer = start("writer", Box::new(move || write_loop(s, w, stdin)));
    let (s, w, stdout) = (Arc::clone(shared), Arc::clone(&worker), launched.stdout);
    let reader = start("reader", Box::new(move || read_loop(s, w, stdout)));
    let mut st = shared.state.lock();
    let failed = writer.is_err() || reader.is_err();
    st.threads.extend(writer.into_iter().chain(reader));
    shared.changed.notify_all();
    if failed {
        st.workers.retain(|w| !Arc::ptr_eq(w, &worker));
        drop(st);
        worker.abandon_start();
        shared.break_pool("cannot start a pool thread".to_string());
    }
}
