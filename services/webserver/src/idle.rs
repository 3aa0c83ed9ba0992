//! Idle deadlines on an HTTP connection's bodies (`SHOAL_HTTP_BODY_TIMEOUT`), so a
//! client can hold an upload or download slot only while it moves bytes:
//!
//! - [`IdleBody`] wraps a request body: a handler waiting for the next piece of it
//!   waits at most the deadline, then reads an error ([`BodyTimeout`]). The clock runs
//!   only while the handler waits for the client, never while it is busy itself.
//! - [`WriteIdle`] wraps the connection: a write the client does not drain within the
//!   deadline (an unread download, its socket buffers full) fails, which ends the
//!   connection and drops the response with its slot.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A request body that delivered nothing within the deadline.
#[derive(Debug, thiserror::Error)]
#[error("no request body data for {0:?} (SHOAL_HTTP_BODY_TIMEOUT)")]
pub struct BodyTimeout(pub Duration);

/// Whether `e` (or an error it wraps) is a [`BodyTimeout`].
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A deadline armed when a wait starts and dropped when it ends.
struct Deadline {
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn new(idle: Duration) -> Self {
        Self { idle, sleep: None }
    }

    /// Called when the wrapped operation is pending: true once the deadline passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let idle = self.idle;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        sleep.as_mut().poll(cx).is_ready()
    }

    fn progressed(&mut self) {
        self.sleep = None;
    }
}

pub struct IdleBody<B> {
    inner: Pin<Box<B>>,
    deadline: Deadline,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner: Box::pin(inner),
            deadline: Deadline::new(idle),
        }
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline.progressed();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending if this.deadline.expired(cx) => {
                this.deadline.progressed();
                Poll::Ready(Some(Err(Box::new(BodyTimeout(this.deadline.idle)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection whose writes fail after the deadline without progress.
pub struct WriteIdle<T> {
    io: T,
    deadline: Deadline,
}

impl<T> WriteIdle<T> {
    pub fn new(io: T, idle: Duration) -> Self {
        Self {
            io,
            deadline: Deadline::new(idle),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteIdle<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> WriteIdle<T> {
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match op(Pin::new(&mut self.io), cx) {
            Poll::Ready(r) => {
                self.deadline.progressed();
                Poll::Ready(r)
            }
            Poll::Pending if self.deadline.expired(cx) => {
                self.deadline.progressed();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client read nothing for {:?} (SHOAL_HTTP_BODY_TIMEOUT)",
                        self.deadline.idle
                    ),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteIdle<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.watch(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.watch(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_errors_after_the_deadline_only_while_awaited() {
        use http_body_util::BodyExt;
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, io::Error>>(1);
        let mut body = IdleBody::new(http_body_util::StreamBody::new(rx), Duration::from_secs(30));
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        // Not waiting: time passing while the handler is busy does not count.
        tokio::time::advance(Duration::from_secs(60)).await;
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"b"))))
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let started = tokio::time::Instant::now();
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(is_body_timeout(e.as_ref()), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_drains_fails_after_the_deadline() {
        let (a, _b) = tokio::io::duplex(16);
        let mut w = WriteIdle::new(a, Duration::from_secs(5));
        w.write_all(&[0; 16]).await.expect("fits the buffer");
        let started = tokio::time::Instant::now();
        let e = w.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
