//! What a host link survives and how it is opened: a handshake the host
//! drops is tried again, `fanout` bounds the connections being opened at
//! once, and a link that goes silent is lost.

use std::fs;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use concurrent_futures::{task, Error};

use crate::cluster_common::{
    assert_host_lost, busy_worker, fresh_cache, over_ssh, parent_of, ssh, ssh_clients, write_script,
};
use crate::process_common::{alive, builder, eventually, gate, send_signal, square, Scratch, LONG};

#[test]
fn a_handshake_the_host_drops_is_tried_again() {
    over_ssh(|config| {
        let dir = Scratch::new("refused");
        let wrapper = dir.path().join("ssh");
        let tries = dir.path().join("tries");
        // The first two agent connections fail as sshd's MaxStartups makes
        // them fail; the host check (`exit 0`) always passes.
        write_script(
            &wrapper,
            &format!(
                "#!/bin/sh\ncase \"$*\" in *CONCURRENT_FUTURES_WORKER=agent*)\n  \
                 echo x >> '{t}'\n  \
                 if [ $(wc -l < '{t}') -le 2 ]; then\n    \
                 echo 'kex_exchange_identification: Connection closed by remote host' >&2\n    \
                 exit 255\n  fi;;\nesac\nexec ssh \"$@\"\n",
                t = tries.display()
            ),
        );
        let pool = builder()
            .launcher(ssh(&config, &[("refused1", 1)]).ssh_program(wrapper.as_os_str()))
            .build()
            .expect("pool");
        assert_eq!(pool.submit(task!(square), 3).result_timeout(LONG), Ok(9));
        let attempts = fs::read_to_string(&tries)
            .expect("the tries")
            .lines()
            .count();
        assert_eq!(attempts, 3);
        let host = &pool.stats().hosts[0];
        assert!(host.up, "{host:?}");
    });
}

/// Three hosts of one slot, a worker started on each from three threads
/// at once, through an ssh that takes 300 ms before it connects (logged):
/// how many connection attempts were in flight at most.
fn most_at_once(fanout: Option<usize>, tag: &str) -> usize {
    let config = crate::cluster_common::ssh_config().expect("ssh config");
    let dir = Scratch::new(tag);
    let wrapper = dir.path().join("ssh");
    let log = dir.path().join("log");
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\ncase \"$*\" in *CONCURRENT_FUTURES_WORKER=agent*)\n  \
             echo \"+ $(date +%s%N)\" >> '{l}'; sleep 0.3; echo \"- $(date +%s%N)\" >> '{l}';;\n\
             esac\nexec ssh \"$@\"\n",
            l = log.display()
        ),
    );
    let mut launcher =
        ssh(&config, &[("fan1", 1), ("fan2", 1), ("refused1", 1)]).ssh_program(wrapper.as_os_str());
    if let Some(n) = fanout {
        launcher = launcher.fanout(n);
    }
    let pool = Arc::new(builder().launcher(launcher).build().expect("pool"));
    let scratch = Arc::new(Scratch::new(&format!("{tag}-gate")));
    let start = Arc::new(Barrier::new(3));
    let submitters: Vec<_> = (0..3)
        .map(|_| {
            let (pool, scratch, start) =
                (Arc::clone(&pool), Arc::clone(&scratch), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                pool.submit(task!(gate), scratch.dir())
            })
        })
        .collect();
    let running: Vec<_> = submitters
        .into_iter()
        .map(|t| t.join().expect("submit"))
        .collect();
    scratch.wait_started(3);
    scratch.open();
    for mut fut in running {
        fut.result_timeout(LONG).expect("a pid");
    }
    let mut events: Vec<(u128, i32)> = fs::read_to_string(&log)
        .expect("the log")
        .lines()
        .filter_map(|l| {
            let (sign, at) = l.split_once(' ')?;
            Some((at.parse().ok()?, if sign == "+" { 1 } else { -1 }))
        })
        .collect();
    events.sort();
    assert_eq!(events.len(), 6, "{events:?}");
    let (mut now, mut most) = (0, 0);
    for (_, step) in events {
        now += step;
        most = most.max(now);
    }
    most as usize
}

#[test]
fn fanout_bounds_the_connections_opened_at_once() {
    over_ssh(|_config| {
        assert_eq!(most_at_once(Some(1), "fanout-1"), 1);
        // The default lets all three go at once: the test can tell.
        assert_eq!(most_at_once(None, "fanout-default"), 3);
    });
}

#[test]
fn a_silent_link_is_lost_and_its_agent_goes() {
    over_ssh(|config| {
        let scratch = Scratch::new("quiet");
        // An ssh that logs the host checks (`ssh host exit 0`).
        let checks = scratch.path().join("checks");
        let wrapper = scratch.path().join("ssh");
        write_script(
            &wrapper,
            &format!(
                "#!/bin/sh\ncase \"$*\" in *'exit 0') echo x >> '{c}';; esac\nexec ssh \"$@\"\n",
                c = checks.display()
            ),
        );
        let count = || fs::read_to_string(&checks).map_or(0, |t| t.lines().count());
        let launcher = ssh(&config, &[("quiet1", 1)])
            .keepalive(Duration::from_millis(100))
            .ssh_program(wrapper.as_os_str());
        let (pool, worker, running) = busy_worker(launcher, &scratch);
        let agent = parent_of(worker).expect("the agent");
        // A frozen host: the connection stays, nothing comes through it.
        send_signal(agent, libc::SIGSTOP);
        let why = assert_host_lost(running, "quiet1");
        assert!(why.contains("was silent for 600ms"), "{why}");
        send_signal(agent, libc::SIGCONT);
        // Woken, the agent finds its link gone: it and its worker exit.
        eventually("the agent exits", || !alive(agent));
        eventually("its worker exits", || !alive(worker));
        assert_eq!(count(), 1);
        // The host is checked again before its next link.
        assert_eq!(pool.submit(task!(square), 4).result_timeout(LONG), Ok(16));
        assert_eq!(count(), 2);
    });
}

#[test]
fn submit_returns_before_the_host_is_connected() {
    over_ssh(|config| {
        // An ssh that waits for a go-ahead the test gives only after
        // `submit` returned: a `submit` that waited for the connection
        // would never return.
        let dir = Scratch::new("go-ahead");
        let go = dir.path().join("go");
        let wrapper = dir.path().join("ssh");
        write_script(
            &wrapper,
            &format!(
                "#!/bin/sh\nwhile [ ! -e '{g}' ]; do [ -d '{d}' ] || exit 1; sleep 0.01; done\nexec ssh \"$@\"\n",
                g = go.display(),
                d = dir.path().display()
            ),
        );
        let launcher = ssh(&config, &[("node1", 1)]).ssh_program(wrapper.as_os_str());
        let pool = builder().launcher(launcher).build().expect("pool");
        let (tx, rx) = std::sync::mpsc::channel();
        let submitter = thread::spawn(move || {
            let fut = pool.submit(task!(square), 9);
            tx.send(()).expect("the test waits");
            (pool, fut)
        });
        rx.recv_timeout(LONG).expect("submit returned");
        let (_pool, mut fut) = submitter.join().expect("submitter");
        assert!(!fut.done());
        fs::write(&go, b"").expect("go ahead");
        assert_eq!(fut.result_timeout(LONG), Ok(81));
    });
}

/// Takes its argument's length: a task whose argument is what counts.
fn length(bytes: Vec<u8>) -> usize {
    bytes.len()
}

#[test]
fn a_frozen_agent_is_lost_to_silence_while_the_pool_is_blocked_writing_to_it() {
    over_ssh(|config| {
        let launcher = ssh(&config, &[("frozen1", 1)]).keepalive(Duration::from_millis(200));
        let pool = builder().launcher(launcher).build().expect("pool");
        let worker = pool
            .submit(task!(crate::process_common::pid), ())
            .result_timeout(LONG)
            .expect("the worker's pid");
        let agent = parent_of(worker).expect("the agent");
        // 32 MB of arguments for an idle worker: more than the pipes and
        // socket buffers between here and the frozen agent hold, so the
        // link's driver blocks in a write. The keepalive, on a thread of
        // its own, still sees the silence and ends the link, which ends
        // the write. The first is submitted before the agent freezes, so
        // that its 16 MB are encoded and on their way (running) well before
        // the silence is up, however loaded the machine; it cannot finish
        // first, as its bytes take longer to pass than the signal.
        let mut first = pool.submit(task!(length), vec![7u8; 16 << 20]);
        send_signal(agent, libc::SIGSTOP);
        let second = pool.submit(task!(length), vec![7u8; 16 << 20]);
        let (first, futs) = (first.result_timeout(LONG), [second]);
        let Err(Error::HostLost(why)) = &first else {
            panic!("expected HostLost, got {first:?}");
        };
        assert!(why.contains("was silent for 1.2s"), "{why}");
        // The default policy: the pool broke with it, for the same reason.
        for mut f in futs {
            let next = f.result_timeout(LONG);
            assert!(
                matches!(&next, Err(Error::BrokenPool(m)) if m.contains("was silent for 1.2s")),
                "{next:?}"
            );
        }
        send_signal(agent, libc::SIGCONT);
        eventually("the agent exits", || !alive(agent));
        eventually("its worker exits", || !alive(worker));
    });
}

#[test]
fn pings_wait_for_the_agent_s_handshake_so_a_copy_is_never_spoiled() {
    over_ssh(|config| {
        // A client that passes the first block of its input on, then
        // pauses: the copy of the binary takes a second, and a ping every
        // millisecond would land in it if one were sent before the agent
        // answered.
        let dir = Scratch::new("pinged");
        let wrapper = dir.path().join("ssh");
        write_script(
            &wrapper,
            "#!/bin/sh\n{ dd bs=65536 count=1 2>/dev/null; sleep 1; cat; } | exec ssh \"$@\"\n",
        );
        let cache = fresh_cache("pinged");
        let launcher = ssh(&config, &[("pinged1", 1)])
            .ssh_program(wrapper.as_os_str())
            .cache_dir(cache.to_string_lossy())
            .keepalive(Duration::from_millis(1));
        let pool = builder().launcher(launcher).build().expect("pool");
        assert_eq!(pool.submit(task!(square), 5).result_timeout(LONG), Ok(25));
        drop(pool);
        // The cached program is the binary, byte for byte: its name's key
        // is its SHA-256.
        let cached: Vec<_> = fs::read_dir(&cache)
            .expect("the cache")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        assert_eq!(cached.len(), 1, "{cached:?}");
        let key = cached[0]
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("worker-"))
            .expect("worker-<key>")
            .to_string();
        let out = std::process::Command::new("sha256sum")
            .arg(&cached[0])
            .output()
            .expect("sha256sum");
        let sum = String::from_utf8_lossy(&out.stdout);
        assert!(sum.starts_with(&key), "{sum} is not {key}");
        let _ = fs::remove_dir_all(&cache);
    });
}

#[test]
fn a_lost_link_is_reported_at_once_while_something_holds_its_stderr() {
    over_ssh(|config| {
        // The client leaves a process behind that keeps its stderr open:
        // the link's end must not wait for that stream.
        let dir = Scratch::new("held");
        let wrapper = dir.path().join("ssh");
        write_script(&wrapper, "#!/bin/sh\n( sleep 20 >&2 & )\nexec ssh \"$@\"\n");
        let scratch = Scratch::new("held-gate");
        let launcher = ssh(&config, &[("held1", 1)]).ssh_program(wrapper.as_os_str());
        let (_pool, _worker, running) = busy_worker(launcher, &scratch);
        let clients = ssh_clients("held1");
        assert_eq!(clients.len(), 1, "{clients:?}");
        send_signal(clients[0], libc::SIGKILL);
        // Within LONG (10 s), not after a minute of silence.
        assert_host_lost(running, "held1");
    });
}
