//! Starting the local client of a remote worker (`ssh`, `srun`) so that it
//! dies with this process.
//!
//! A worker elsewhere cannot watch this process; it learns that the pool is
//! gone when its connection ends. But a client whose stdin closes (this
//! process was killed) only passes the end of input on, and the worker
//! takes that as a shutdown: it finishes its task first, which may never
//! end. So the client is started through util-linux's `setpriv
//! --pdeathsig KILL`: the kernel kills it when its parent dies, the
//! connection drops, and the remote worker's parent (the ssh session,
//! slurmstepd) ends or ends it.
//!
//! The parent-death signal fires when the *thread* that started the child
//! ends, not the process; so clients are started from one thread that
//! lives as long as the process. Without `setpriv` (not Linux, or no
//! util-linux) the client is started as is.
//!
//! Either way a client starts in a process group of its own: the
//! terminal's Ctrl-C goes to the whole foreground group, and a client that
//! got it would drop its remote worker mid-task, even when this program
//! catches SIGINT to stop gracefully. The death signal does not depend on
//! the group.

use std::io;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::OnceLock;

use crossbeam_channel::{Receiver, Sender};

use super::spawned::{own_process_group, pipe_stdio};

/// Where util-linux puts `setpriv`.
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

type Request = (Command, Sender<io::Result<Child>>);

/// Starts `command` with its three streams piped, in a process group of
/// its own, so that it is killed if this process dies.
pub(crate) fn spawn_client(mut command: Command) -> io::Result<Child> {
    let Some(tx) = spawner() else {
        // No such thread: a signal that fires when this thread ends would
        // be worse than none.
        return own_process_group(pipe_stdio(&mut command)).spawn();
    };
    let mut command = with_death_signal(command);
    own_process_group(pipe_stdio(&mut command));
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    let gone = || io::Error::other("the thread that starts clients is gone");
    tx.send((command, reply_tx)).map_err(|_| gone())?;
    reply_rx.recv().map_err(|_| gone())?
}

/// The thread that starts clients, started at first use.
fn spawner() -> Option<&'static Sender<Request>> {
    static SPAWNER: OnceLock<Option<Sender<Request>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx): (Sender<Request>, Receiver<Request>) = crossbeam_channel::unbounded();
            std::thread::Builder::new()
                .name("concurrent-futures-clients".to_string())
                .spawn(move || {
                    for (mut command, reply) in rx {
                        let _ = reply.send(command.spawn());
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

fn setpriv() -> Option<&'static str> {
    static FOUND: OnceLock<Option<&'static str>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        if !cfg!(target_os = "linux") {
            return None;
        }
        SETPRIV.into_iter().find(|p| Path::new(p).exists())
    })
}

/// `setpriv --pdeathsig KILL -- <command>`, same environment and directory.
fn with_death_signal(command: Command) -> Command {
    let Some(setpriv) = setpriv() else {
        return command;
    };
    let mut wrapped = Command::new(setpriv);
    wrapped
        .args(["--pdeathsig", "KILL", "--"])
        .arg(command.get_program())
        .args(command.get_args());
    copy_env(&command, &mut wrapped);
    wrapped
}

fn copy_env(from: &Command, to: &mut Command) {
    for (key, value) in from.get_envs() {
        match value {
            Some(v) => to.env(key, v),
            None => to.env_remove(key),
        };
    }
    if let Some(dir) = from.get_current_dir() {
        to.current_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "starts a process, which Miri cannot")]
    fn a_client_starts_with_its_environment() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo $CF_CLIENT_TEST"])
            .env("CF_CLIENT_TEST", "here");
        let out = spawn_client(cmd)
            .and_then(Child::wait_with_output)
            .expect("run sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "here");
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "starts a process, which Miri cannot")]
    fn a_client_leads_a_process_group_of_its_own() {
        // Its pid, then its process group (field 5 of /proc/PID/stat; the
        // name before it, "sh", has no space).
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo $$; cut -d' ' -f5 /proc/$$/stat"]);
        let out = spawn_client(cmd)
            .and_then(Child::wait_with_output)
            .expect("run sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0], lines[1], "not a group leader: {text}");
    }
}
