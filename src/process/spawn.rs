//! Starting a worker: the launch (through the pool's launcher, without
//! the pool's lock) and its writer and reader threads. `shared.rs` decides
//! when; this carries it out.

use std::sync::Arc;
use std::thread;

use std::io::{Read, Write};

use super::driven::Driven;
use super::launcher::{agent_worker, launch, Launched};
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
    if shared.config.launch_apart || crate::agent::on_driver_thread() {
        // A launch elsewhere may connect to a host, copy the binary there
        // or wait for a job to start: not on the thread of a `submit`,
        // which returns at once, and never on a link's driver, which
        // serves every worker on its host. A local launch (a fork and
        // exec) runs where it is asked for.
        let s = Arc::clone(shared);
        let launcher = thread::Builder::new()
            .name("concurrent-futures-launch".to_string())
            .spawn(move || launch_worker(&s));
        match launcher {
            Ok(handle) => shared.state.lock().threads.extend([handle]),
            Err(_) => launch_worker(shared),
        }
        return;
    }
    launch_worker(shared);
}

/// [`start_worker`] on the calling thread.
fn launch_worker(shared: &Arc<Shared>) {
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
    let Launched {
        process,
        stdin,
        stdout,
        label,
        tail,
        stderr_thread,
        linked,
    } = launched;
    let bell = linked.as_ref().map(|(bell, _)| Arc::clone(bell));
    if let Some(bell) = &bell {
        shared.add_bell(bell);
    }
    let worker = Worker::new(process, label, tail, stderr_thread, bell);
    st.workers.push(Arc::clone(&worker));
    st.driven += usize::from(linked.is_some());
    let broken = st.broken.is_some();
    drop(st);
    if broken {
        worker.stop(Fate::Stopped("stopped because the pool broke".into()), true);
    }
    let started = match linked {
        // Its output goes to the link's driver from now on; the pipes it
        // came with are dropped after that.
        Some((_, stderr)) => {
            let rider = Driven::new(Arc::clone(shared), Arc::clone(&worker), stdin);
            let attached = worker
                .process
                .lock()
                .as_mut()
                .and_then(|p| agent_worker(p.as_mut()))
                .map(|w| w.attach(Box::new(rider)));
            drop((stdout, stderr));
            matches!(attached, Some(Ok(())))
        }
        None => start_threads(shared, &worker, stdin, stdout),
    };
    if !started {
        let mut st = shared.state.lock();
        st.workers.retain(|w| !Arc::ptr_eq(w, &worker));
        drop(st);
        worker.abandon_start();
        shared.break_pool("cannot start a pool thread".to_string());
    }
}

/// Starts the writer and reader threads of `worker`; false if they could
/// not start.
fn start_threads(
    shared: &Arc<Shared>,
    worker: &Arc<Worker>,
    stdin: Box<dyn Write + Send>,
    stdout: Box<dyn Read + Send>,
) -> bool {
    let name = worker
        .pid
        .map_or_else(|| "remote".to_string(), |p| p.to_string());
    let start = |role: &str, f: Box<dyn FnOnce() + Send>| {
        thread::Builder::new()
            .name(format!("concurrent-futures-{role}-{name}"))
            .spawn(f)
    };
    let (s, w) = (Arc::clone(shared), Arc::clone(worker));
    let writer = start("writer", Box::new(move || write_loop(s, w, stdin)));
    let (s, w) = (Arc::clone(shared), Arc::clone(worker));
    let reader = start("reader", Box::new(move || read_loop(s, w, stdout)));
    let mut st = shared.state.lock();
    let failed = writer.is_err() || reader.is_err();
    st.threads.extend(writer.into_iter().chain(reader));
    shared.changed.notify_all();
    !failed
}
