//! The socket of one accepted connection, as a number, so that the broker
//! can close a connection the HTTP server would hold forever.
//!
//! # Why the broker touches a socket at all
//! A client that stops reading is cut (`slow-consumer`) or times out, and
//! its Session or SseStream ends the response body. But the HTTP/1
//! dispatcher of actix-http pulls the body only while its write buffer has
//! room, and it has none: the client's receive window is shut, the kernel's
//! send buffer is full, and the dispatcher waits for the socket to become
//! writable, with no timer on a streaming response. It never sees the body
//! end, and the socket stays ESTABLISHED with megabytes unsent for as long
//! as the peer keeps acknowledging with a zero window: minutes, or forever.
//!
//! So the server records each connection's file descriptor when it accepts
//! it (`HttpServer::on_connect`), and the [`SendQueue`] of the response that
//! runs on it holds the number. If the body is still alive `close_timeout`
//! after it was ended, the queue resets it (`ConnectionSocket::reset`):
//! `SO_LINGER {on, 0}` and `shutdown(SHUT_RDWR)`. The dispatcher's pending
//! write fails, it drops the connection, and the close sends a reset that
//! discards the unsent bytes instead of waiting to deliver them.
//!
//! # Never a descriptor we do not own
//! The descriptor is not ours: the dispatcher owns the socket and closes
//! it, after which the number may name another connection or file. It is
//! used only while the body is alive, because the dispatcher holds the body
//! and the socket together and drops them together, on the worker thread
//! that also runs the queue's timer: a live body proves that the number
//! still names this connection. The queue forgets the number when the body
//! goes. The broker never closes the descriptor itself.
//!
//! [`SendQueue`]: crate::send_queue::SendQueue

use std::os::fd::{AsRawFd, RawFd};

/// The descriptor of an accepted TCP connection; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSocket(RawFd);

impl ConnectionSocket {
    /// The socket of `stream`, as the server accepted it.
    pub fn of(stream: &impl AsRawFd) -> Self {
        ConnectionSocket(stream.as_raw_fd())
    }

    /// Makes the connection end now, with a reset: whatever is unsent is
    /// discarded. Only while the response body that runs on this
    /// connection is alive (see the module documentation); the owner still
    /// closes the descriptor. Whether the kernel accepted the shutdown.
    pub(crate) fn reset(self) -> bool {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the caller guarantees that the descriptor is open and is
        // this connection's (a live body); both calls only read `linger`.
        unsafe {
            libc::setsockopt(
                self.0,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
            libc::shutdown(self.0, libc::SHUT_RDWR) == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_reset_socket_ends_at_the_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(ConnectionSocket::of(&server).reset());
        drop(server);
        let mut buf = [0u8; 16];
        match client.read(&mut buf) {
            Ok(0) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
            Ok(n) => panic!("read {n} bytes from a reset socket"),
        }
    }
}
