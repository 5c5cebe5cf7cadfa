//! Prompt acknowledgements on the TCP connection that carries a step's
//! I/O between `srun` and `slurmstepd`.
//!
//! Slurm forwards a step's stdin and stdout over one TCP connection and
//! writes each message of at most 1,024 bytes (`SLURM_IO_MAX_MSG_LEN`) with
//! a `write` of its own, on a socket without `TCP_NODELAY`. So a burst of
//! more than one message sends the first and Nagle's algorithm holds the
//! rest until the first is acknowledged; the receiving side, with nothing
//! to send back, acknowledges it only when its delayed-ACK timer fires,
//! 40 ms later. A 3,000-byte answer took 44 ms, every time
//! (`docs/performance.md`, "srun's acknowledgements").
//!
//! `srun` is the pool's own child, so the pool may take a duplicate of its
//! end of that connection (`pidfd_getfd`, Linux 5.6, the same permission
//! as attaching a debugger to it) and set socket options on it, which the
//! duplicate shares with `srun`'s descriptor:
//!
//! - `TCP_NODELAY`, once: what the pool sends is never held;
//! - `TCP_QUICKACK` after each read of the step's output: `srun`
//!   acknowledges at once what it received, and `slurmstepd` sends what
//!   it was holding. The option does not stay set; the kernel goes back to
//!   delayed acknowledgements as the connection turns interactive, so it
//!   is set again each time.
//!
//! Nothing else of `srun`'s connection changes: no byte is read or written
//! through the duplicate. It is closed when the output ends, so that a
//! `srun` that dies closes its connection as before. Where the duplicate
//! cannot be had (another system, a kernel before 5.6, a ptrace policy or
//! a seccomp filter that forbids it), the step's I/O works as it did, with
//! the stalls; the pool says so once, in a `tracing` event.

use std::io::{self, Read};

/// The step's output (`srun`'s stdout), read the way it was; each read
/// asks `srun`'s end of the I/O connection to acknowledge at once.
pub(super) struct QuickAcks {
    inner: Box<dyn Read + Send>,
    pid: u32,
    sockets: Sockets,
}

/// Where the duplicates of `srun`'s sockets are.
enum Sockets {
    /// Not taken yet: the connection is there once output came through it.
    Untried,
    Taken(Vec<std::os::fd::OwnedFd>),
    /// Could not be taken, or the output ended.
    None,
}

impl QuickAcks {
    /// Wraps `stdout`, the output of `srun` whose pid is `pid`.
    pub(super) fn new(pid: u32, stdout: Box<dyn Read + Send>) -> Self {
        QuickAcks {
            inner: stdout,
            pid,
            sockets: Sockets::Untried,
        }
    }

    fn acknowledge(&mut self) {
        if let Sockets::Untried = self.sockets {
            self.sockets = match imp::take(self.pid) {
                Ok(taken) if !taken.is_empty() => Sockets::Taken(taken),
                Ok(_) => {
                    tracing::debug!(
                        target: "concurrent_futures",
                        pid = self.pid,
                        "srun has no TCP connection to tune"
                    );
                    Sockets::None
                }
                Err(e) => {
                    tracing::info!(
                        target: "concurrent_futures",
                        pid = self.pid,
                        error = %e,
                        "cannot set TCP_NODELAY and TCP_QUICKACK on srun's I/O \
                         connection; messages over 1 KB through srun may wait \
                         40 ms for Slurm's delayed acknowledgements"
                    );
                    Sockets::None
                }
            };
        }
        if let Sockets::Taken(sockets) = &self.sockets {
            for socket in sockets {
                // Best effort: a socket srun has since closed on its side
                // still takes the option harmlessly.
                let _ = imp::quick_ack(socket);
            }
        }
    }
}

impl Read for QuickAcks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) => {
                self.sockets = Sockets::None;
                Ok(0)
            }
            Ok(n) => {
                self.acknowledge();
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.sockets = Sockets::None;
                Err(e)
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::os::fd::OwnedFd;

    use rustix::net::{self, sockopt, AddressFamily, SocketType};
    use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};

    /// Duplicates of the connected TCP sockets of process `pid`, each set
    /// `TCP_NODELAY`.
    pub(super) fn take(pid: u32) -> io::Result<Vec<OwnedFd>> {
        let raw = i32::try_from(pid).ok().and_then(Pid::from_raw);
        let pid_ = raw.ok_or_else(|| io::Error::other(format!("no such pid {pid}")))?;
        let pidfd = pidfd_open(pid_, PidfdFlags::empty())?;
        let mut taken = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
            let entry = entry?;
            let is_socket = std::fs::read_link(entry.path()).is_ok_and(|target| {
                target
                    .as_os_str()
                    .as_encoded_bytes()
                    .starts_with(b"socket:")
            });
            let number = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok());
            let (true, Some(number)) = (is_socket, number) else {
                continue;
            };
            let fd = match pidfd_getfd(&pidfd, number, PidfdGetfdFlags::empty()) {
                Ok(fd) => fd,
                // Closed since it was listed.
                Err(rustix::io::Errno::BADF) => continue,
                Err(e) => return Err(e.into()),
            };
            if connected_tcp(&fd) {
                sockopt::set_tcp_nodelay(&fd, true)?;
                taken.push(fd);
            }
        }
        Ok(taken)
    }

    /// Whether fd is a TCP socket with a peer (not a listening one).
    fn connected_tcp(fd: &OwnedFd) -> bool {
        let tcp_domain = matches!(
            sockopt::socket_domain(fd),
            Ok(AddressFamily::INET | AddressFamily::INET6)
        );
        tcp_domain
            && sockopt::socket_type(fd).is_ok_and(|t| t == SocketType::STREAM)
            && matches!(net::getpeername(fd), Ok(Some(_)))
    }

    pub(super) fn quick_ack(fd: &OwnedFd) -> io::Result<()> {
        Ok(sockopt::set_tcp_quickack(fd, true)?)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::os::fd::OwnedFd;

    pub(super) fn take(_pid: u32) -> io::Result<Vec<OwnedFd>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "pidfd_getfd is Linux's",
        ))
    }

    pub(super) fn quick_ack(_fd: &OwnedFd) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use rustix::net::sockopt;

    use super::{QuickAcks, Sockets};

    /// Accepts one connection within 10 s.
    fn accept(listener: &TcpListener) -> std::net::TcpStream {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking");
                    return stream;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no connection");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    #[test]
    fn a_child_s_connection_gets_nodelay_and_is_let_go_when_its_output_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("port").port();
        // A stand-in for srun: a connected TCP socket, then output, then
        // it waits for its stdin to end.
        let mut child = Command::new("bash")
            .args([
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; echo ready; read _; echo bye"),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bash");
        let mut peer = accept(&listener);
        let stdout = child.stdout.take().expect("stdout");
        let mut out = BufReader::new(QuickAcks::new(child.id(), Box::new(stdout)));
        let mut line = String::new();
        out.read_line(&mut line).expect("read");
        assert_eq!(line, "ready\n");
        let Sockets::Taken(sockets) = &out.get_ref().sockets else {
            panic!("the child's socket was not taken");
        };
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockopt::tcp_nodelay(&sockets[0]).ok(), Some(true));
        // Its output ends: the duplicate is closed, so the connection ends
        // when the child's own descriptor does.
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"\n")
            .expect("write");
        let mut rest = String::new();
        out.read_to_string(&mut rest).expect("the rest");
        assert_eq!(rest, "bye\n");
        assert!(matches!(out.get_ref().sockets, Sockets::None));
        assert!(child.wait().expect("wait").success());
        peer.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut buf = [0u8; 1];
        assert_eq!(peer.read(&mut buf).expect("EOF, not a timeout"), 0);
    }

    #[test]
    fn output_without_a_connection_passes_through() {
        let mut child = Command::new("echo")
            .arg("plain")
            .stdout(Stdio::piped())
            .spawn()
            .expect("echo");
        let stdout = child.stdout.take().expect("stdout");
        let mut out = QuickAcks::new(child.id(), Box::new(stdout));
        let mut text = String::new();
        out.read_to_string(&mut text).expect("read");
        assert_eq!(text, "plain\n");
        assert!(matches!(out.sockets, Sockets::None));
        assert!(child.wait().expect("wait").success());
    }
}
