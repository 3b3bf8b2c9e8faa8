//! The relay's byte copy, both ways, holding a buffer only while bytes are in flight.
//!
//! `tokio::io::copy_bidirectional` keeps two 8 KiB buffers for the whole life of a session.
//! Most proxy sessions are idle most of the time (an IMAP client in IDLE for 29 minutes, a
//! monitoring tool between polls), and a thousand of them would hold 16 MiB for nothing. Here
//! each direction takes its buffer when the source has bytes and gives it back as soon as the
//! source has nothing more for now and everything read was written (and flushed): an idle
//! session holds no copy buffer at all (docs/benchmarks.md, "The legacy proxy").

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The size of a direction's buffer while it copies; tokio's own copy uses the same.
const BUFFER_BYTES: usize = 8 * 1024;

/// One direction's state.
#[derive(Default)]
struct Direction {
    /// `Some` only while bytes are in flight (read but not yet written and flushed).
    buffer: Option<Box<[u8]>>,
    /// Bytes of `buffer` already written.
    written: usize,
    /// Bytes of `buffer` read.
    filled: usize,
    /// The source said end of file.
    source_ended: bool,
    /// The destination was shut down after the source ended: this direction is over.
    done: bool,
    /// Something was written since the last flush.
    unflushed: bool,
    /// Bytes copied in all.
    copied: u64,
}

impl Direction {
    /// Copies until the source is exhausted for now (`Pending`) or has ended and the
    /// destination was shut down (`Ready(Ok)`).
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut source: Pin<&mut R>,
        mut destination: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.written == self.filled && !self.source_ended {
                let buffer = self
                    .buffer
                    .get_or_insert_with(|| vec![0; BUFFER_BYTES].into_boxed_slice());
                let mut read = ReadBuf::new(buffer);
                match source.as_mut().poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        let n = read.filled().len();
                        self.written = 0;
                        self.filled = n;
                        if n == 0 {
                            self.source_ended = true;
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing more for now: everything read has been written, so the
                        // buffer goes back, and what was written goes out before waiting.
                        self.buffer = None;
                        self.written = 0;
                        self.filled = 0;
                        if self.unflushed {
                            ready!(destination.as_mut().poll_flush(cx))?;
                            self.unflushed = false;
                        }
                        return Poll::Pending;
                    }
                }
            }
            while self.written < self.filled {
                let Some(buffer) = self.buffer.as_deref() else {
                    break;
                };
                let pending = buffer.get(self.written..self.filled).unwrap_or_default();
                let n = ready!(destination.as_mut().poll_write(cx, pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the destination accepted no bytes",
                    )));
                }
                self.written += n;
                self.copied += n as u64;
                self.unflushed = true;
            }
            if self.source_ended {
                ready!(destination.as_mut().poll_shutdown(cx))?;
                self.buffer = None;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copies bytes both ways until both sides have ended (each end of file is passed on as a
/// shutdown of the other side's writing half), or either fails. Returns the bytes copied
/// from `a` to `b` and from `b` to `a`, like `tokio::io::copy_bidirectional`.
pub(crate) async fn copy_both_ways<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    poll_fn(|cx| {
        let forward = a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b))?;
        let backward = b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a))?;
        match (forward, backward) {
            (Poll::Ready(()), Poll::Ready(())) => Poll::Ready(Ok((a_to_b.copied, b_to_a.copied))),
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_passes_each_end_on() {
        let (mut client, mut proxy_client_side) = tokio::io::duplex(64);
        let (mut proxy_upstream_side, mut upstream) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move {
            copy_both_ways(&mut proxy_client_side, &mut proxy_upstream_side).await
        });
        // More than the duplex pipes and one buffer hold, so writes wait on reads.
        let big: Vec<u8> = (0..3 * BUFFER_BYTES + 17)
            .map(|i| (i % 251) as u8)
            .collect();
        let sent = big.clone();
        let upstream_task = tokio::spawn(async move {
            upstream.write_all(&sent).await.unwrap();
            let mut line = [0u8; 5];
            upstream.read_exact(&mut line).await.unwrap();
            assert_eq!(&line, b"hello");
            upstream.shutdown().await.unwrap();
            let mut rest = Vec::new();
            upstream.read_to_end(&mut rest).await.unwrap();
            rest
        });
        let mut got = vec![0u8; big.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
        client.write_all(b"hello").await.unwrap();
        // The upstream's end reaches the client as an end of file.
        let mut after = Vec::new();
        client.read_to_end(&mut after).await.unwrap();
        assert!(after.is_empty());
        client.write_all(b"bye").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(upstream_task.await.unwrap(), b"bye");
        let (forward, backward) = relay.await.unwrap().unwrap();
        assert_eq!((forward, backward), (8, big.len() as u64));
    }

    #[tokio::test]
    async fn an_idle_direction_holds_no_buffer() {
        let (_client, mut proxy_client_side) = tokio::io::duplex(64);
        let (mut proxy_upstream_side, mut upstream) = tokio::io::duplex(64);
        upstream.write_all(b"* OK idle\r\n").await.unwrap();
        let mut direction = Direction::default();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let polled = direction.poll_copy(
            &mut cx,
            Pin::new(&mut proxy_upstream_side),
            Pin::new(&mut proxy_client_side),
        );
        assert!(polled.is_pending());
        assert_eq!(direction.copied, 11);
        assert!(direction.buffer.is_none(), "a buffer is kept while idle");
    }
}
