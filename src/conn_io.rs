//! The IO of one accepted connection: one socket (one file descriptor) shared
//! by hyper and by the server's own last word, with a write timeout.
//!
//! hyper owns the IO it serves, and on a header timeout it drops it without
//! answering; the server then writes `408` itself. Sharing the socket through
//! an `Arc` (instead of a second, `dup`ed descriptor) keeps one descriptor per
//! connection. The IO also remembers whether request bytes arrived since the
//! last answer, so an idle keep-alive connection is closed silently rather
//! than sent an unsolicited `408` that would race a client reusing it.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Holds one of the `max_connections` slots and one of its address's
/// `max_connections_per_ip`; a websocket keeps them for its whole session.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] pub Arc<dyn std::any::Any + Send + Sync>);

/// What the server keeps of a connection while hyper serves it.
#[derive(Clone)]
pub struct Shared {
    /// The socket.
    pub socket: Arc<TcpStream>,
    /// Request bytes arrived since the last answer was written.
    pending: Arc<AtomicBool>,
}

impl Shared {
    /// `true` when a request had begun to arrive (so a timeout deserves a `408`).
    pub fn request_begun(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    /// Writes `bytes` (best effort, within `limit`) and shuts the writing side.
    pub async fn last_word(&self, bytes: &[u8], limit: Duration) {
        let write = async {
            let mut rest = bytes;
            while !rest.is_empty() {
                self.socket.writable().await?;
                match self.socket.try_write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, io::Error>(())
        };
        let _ = tokio::time::timeout(limit, write).await;
        shutdown_write(&self.socket);
    }
}

fn shutdown_write(socket: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a descriptor the socket owns and keeps open.
    unsafe {
        libc::shutdown(socket.as_raw_fd(), libc::SHUT_WR);
    }
}

/// Bytes one read takes at most.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// Where reads land before they are copied into hyper's buffer.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// The IO hyper serves: reads and writes on the shared socket; a write that
/// cannot proceed for `write_timeout` fails with `TimedOut` (the client is not
/// taking its answer, or its websocket frames), which ends the connection.
pub struct ConnIo {
    shared: Shared,
    write_timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ConnIo {
    /// Wraps an accepted socket; returns the IO for hyper and the server's handle.
    pub fn new(socket: TcpStream, write_timeout: Duration) -> (Self, Shared) {
        let shared = Shared {
            socket: Arc::new(socket),
            pending: Arc::default(),
        };
        let io = Self {
            shared: shared.clone(),
            write_timeout,
            stalled: None,
        };
        (io, shared)
    }

    /// Waits until the socket takes bytes, or fails once it has not for `write_timeout`.
    fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.shared.socket.poll_write_ready(cx) {
            Poll::Ready(ready) => {
                self.stalled = None;
                Poll::Ready(ready)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stalled = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match stalled.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client took nothing for write_timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    /// Writes with `write` once the socket takes bytes (see [`Self::poll_writable`]).
    fn poll_try_write(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_writable(cx))?;
            match write(&self.shared.socket) {
                Ok(n) => {
                    if n > 0 {
                        // An answer went out: what arrives next is a new request.
                        self.shared.pending.store(false, Ordering::Relaxed);
                    }
                    return Poll::Ready(Ok(n));
                }
                // Readiness was cleared by the failed try: poll again to register.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

use std::future::Future as _;

/// Reads what the socket holds into `into`, as `TcpStream::try_read` does, and
/// when that is less than `into` could take (the socket is drained) also
/// clears the socket's read readiness, as tokio's own `poll_read` does: the
/// next read then waits for the next readiness event instead of asking the
/// kernel once more only to hear `EAGAIN` (one `recvfrom` in two per request
/// was that). `try_io` clears the readiness it saw before the read, and only
/// when the closure reports `WouldBlock`, so the closure reports it after a
/// short read and the bytes are passed out beside; readiness that came in
/// during the read has a newer tick and is kept.
fn read_clearing(socket: &TcpStream, into: &mut [u8]) -> io::Result<usize> {
    let mut short = None;
    let read = socket.try_io(tokio::io::Interest::READABLE, || {
        let n = socket.try_read(into)?;
        if n > 0 && n < into.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match short {
        Some(n) => Ok(n),
        None => read,
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.shared.socket.poll_read_ready(cx))?;
            // Read into this thread's scratch buffer and copy what came: safe
            // Rust would have to zero hyper's spare buffer first, on every read
            // (a fifth of a request's instructions), and a buffer per
            // connection would cost every idle websocket its size.
            let room = buf.remaining().min(READ_CHUNK);
            let read = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let n = read_clearing(&this.shared.socket, &mut scratch[..room])?;
                buf.put_slice(&scratch[..n]);
                Ok::<_, io::Error>(n)
            });
            match read {
                Ok(n) => {
                    if n > 0 {
                        this.shared.pending.store(true, Ordering::Relaxed);
                    }
                    return Poll::Ready(Ok(()));
                }
                // Readiness was cleared: poll again to register.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_try_write(cx, |socket| socket.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_try_write(cx, |socket| socket.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        shutdown_write(&self.shared.socket);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A short read leaves the socket's read readiness cleared, so the next read
    /// waits for the kernel's next event instead of asking for `EAGAIN`; and
    /// bytes that come later are still read (no readiness is lost).
    #[tokio::test]
    async fn a_short_read_clears_readiness_and_later_bytes_still_arrive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let (mut io, shared) = ConnIo::new(socket, Duration::from_secs(5));
        let ready = |socket: &TcpStream| {
            socket
                .try_io(tokio::io::Interest::READABLE, || Ok(()))
                .is_ok()
        };

        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut got = vec![0; 1024];
        let n = io.read(&mut got).await.unwrap();
        assert_eq!(&got[..n], b"GET / HTTP/1.1\r\n");
        assert!(!ready(&shared.socket), "a short read clears the readiness");

        for part in [&b"Host: x\r\n"[..], b"\r\n"] {
            let later = async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                client.write_all(part).await.unwrap();
            };
            let (read, ()) = tokio::join!(
                tokio::time::timeout(Duration::from_secs(5), io.read(&mut got)),
                later
            );
            let n = read.expect("later bytes wake the reader").unwrap();
            assert_eq!(&got[..n], part);
        }

        // A read that fills the buffer leaves the readiness as it is: more may wait.
        client.write_all(&[b'x'; 64]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut small = [0; 16];
        assert_eq!(io.read(&mut small).await.unwrap(), 16);
        assert!(ready(&shared.socket));
        let mut rest = vec![0; 1024];
        assert_eq!(io.read(&mut rest).await.unwrap(), 48);
        drop(client);
        assert_eq!(
            io.read(&mut rest).await.unwrap(),
            0,
            "the end of the stream"
        );
    }
}
