//! The kernel send queues of this process's TCP connections: bytes written and not yet
//! acknowledged by the peer, summed over the connections and the largest. A queue that grows is
//! an endpoint (or a network) reading slower than the fleet writes. Sampled once a second on a
//! thread of its own, started by the first look, from the process's own sockets (never the
//! machine's TCP tables: with a broker and 100,000 connections on one box, reading those every
//! second cost more than the fleet itself).

use std::sync::{Mutex, Once};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the queues are sampled.
const EVERY: Duration = Duration::from_secs(1);

/// One look at the send queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SendQueues {
    /// Established TCP connections of this process.
    pub connections: u64,
    /// Bytes in their send queues, all told.
    pub total_bytes: u64,
    /// The longest queue, in bytes.
    pub max_bytes: u64,
}

/// The latest sample (None until the first, or where /proc cannot be read).
pub fn latest() -> Option<SendQueues> {
    static LATEST: Mutex<Option<SendQueues>> = Mutex::new(None);
    static STARTED: Once = Once::new();
    let store = |s| *LATEST.lock().unwrap_or_else(|p| p.into_inner()) = s;
    STARTED.call_once(|| {
        store(sample());
        let spawned = std::thread::Builder::new()
            .name("send-queues".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EVERY);
                    store(sample());
                }
            });
        if let Err(e) = spawned {
            tracing::debug!("send queues not sampled: {e}");
        }
    });
    *LATEST.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the queues now: for each of this process's file descriptors, whether it is an
/// established TCP connection (`TCP_INFO`) and the bytes in its send queue (`SIOCOUTQ`). A
/// syscall or two per descriptor and nothing read for other processes' sockets, so it stays
/// cheap next to 20,000 connections and a broker's own on the same machine.
#[cfg(target_os = "linux")]
pub fn sample() -> Option<SendQueues> {
    let mut q = SendQueues::default();
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        let Some(bytes) = tcp_send_queue(fd) else {
            continue;
        };
        q.connections += 1;
        q.total_bytes += bytes;
        q.max_bytes = q.max_bytes.max(bytes);
    }
    Some(q)
}

#[cfg(not(target_os = "linux"))]
pub fn sample() -> Option<SendQueues> {
    None
}

/// The send queue of `fd` when it is an established TCP connection. A descriptor closed (or
/// reused) since the listing answers for whatever it is now, or not at all: harmless.
#[cfg(target_os = "linux")]
fn tcp_send_queue(fd: libc::c_int) -> Option<u64> {
    /// `tcpi_state` of an established connection (TCP_ESTABLISHED in the kernel's tcp_states.h).
    const ESTABLISHED: u8 = 1;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is that large; on a
    // descriptor that is not a TCP socket it fails and writes nothing we read.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if ok != 0 || info.tcpi_state != ESTABLISHED {
        return None;
    }
    // SIOCOUTQ is TIOCOUTQ's number on Linux: for a TCP socket, the bytes written and not yet
    // acknowledged by the peer. SAFETY: it writes one int into `queued`.
    let mut queued: libc::c_int = 0;
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) } != 0 {
        return None;
    }
    Some(queued.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_peer_that_does_not_read_fills_the_send_queue() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let before = sample().expect("/proc is readable");
        assert!(
            before.connections >= 2,
            "both ends are this process's: {before:?}"
        );
        // The server end never reads: once its receive buffer is full, the rest waits in ours.
        client.set_nonblocking(true).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0usize;
        while written < 64 << 20 {
            match client.write(&chunk) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        let after = sample().unwrap();
        assert!(after.max_bytes >= 64 * 1024, "{after:?} after {written} bytes");
        assert!(after.total_bytes >= after.max_bytes);
    }
}
