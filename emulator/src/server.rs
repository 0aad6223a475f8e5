//! The accept loop: one hyper HTTP/1 connection per socket (TLS-wrapped when configured), each
//! read through a throttle and killable by its own handlers (that is how a "connection reset"
//! fault is staged).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Lets a handler close the connection its request came on, mid-request, without an answer.
#[derive(Debug, Clone)]
pub(crate) struct ConnHandle(CancellationToken);

impl ConnHandle {
    /// Closes the connection. The connection task drops the hyper connection, and this very
    /// request with it, so this never returns.
    pub(crate) async fn kill(&self) -> Response {
        self.0.cancel();
        std::future::pending().await
    }
}

/// A client that connects and never finishes its TLS handshake is dropped after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS acceptor for the PEM certificate chain and key of `tls`.
pub(crate) fn acceptor(tls: &super::EmulatorTls) -> io::Result<TlsAcceptor> {
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("TLS {what} {}: {e}", path.display()),
        )
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| bad("certificate", &tls.cert, &e))?;
    if certs.is_empty() {
        return Err(bad(
            "certificate",
            &tls.cert,
            &"no PEM certificate in the file",
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| bad("private key", &tls.key, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| bad("certificate or key", &tls.cert, &e))?;
    // The connections are served by hyper's HTTP/1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    bandwidth: Arc<AtomicU64>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small answers must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                let (router, bandwidth, shutdown) =
                    (router.clone(), Arc::clone(&bandwidth), shutdown.clone());
                match tls.clone() {
                    None => {
                        tasks.spawn(serve(stream, router, bandwidth, shutdown));
                    }
                    Some(acceptor) => {
                        tasks.spawn(async move {
                            let handshake =
                                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                            let stream = tokio::select! {
                                () = shutdown.cancelled() => return,
                                done = handshake => match done {
                                    Ok(Ok(stream)) => stream,
                                    Ok(Err(e)) => {
                                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => {
                                        tracing::debug!(%peer, "TLS handshake timed out");
                                        return;
                                    }
                                },
                            };
                            serve(stream, router, bandwidth, shutdown).await;
                        });
                    }
                }
                tracing::trace!(%peer, "connection accepted");
            }
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve<S>(stream: S, router: Router, bandwidth: Arc<AtomicU64>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let kill = CancellationToken::new();
    let handle = ConnHandle(kill.clone());
    let service = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        service.call(request)
    });
    let io = TokioIo::new(Throttled::new(stream, bandwidth));
    let connection = http1::Builder::new().serve_connection(io, service);
    tokio::select! {
        result = connection => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        // Dropping the connection future closes the socket: the client sees a reset.
        () = kill.cancelled() => tracing::debug!("connection dropped by an injected fault"),
        () = shutdown.cancelled() => {}
    }
}

/// A stream whose reads are paced to the shared bytes-per-second limit (0 = unlimited), read
/// at every poll so that a new limit applies to open connections at once.
pub(crate) struct Throttled<S> {
    inner: S,
    limit: Arc<AtomicU64>,
    /// When the next read may happen, given what was read so far.
    next_read: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
}

impl<S> Throttled<S> {
    pub(crate) fn new(inner: S, limit: Arc<AtomicU64>) -> Self {
        Throttled {
            inner,
            limit,
            next_read: None,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let limit = this.limit.load(Ordering::Relaxed);
        if limit == 0 {
            this.next_read = None;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let now = Instant::now();
        if let Some(at) = this.next_read
            && at > now
        {
            this.sleep.as_mut().reset(at);
            ready!(this.sleep.as_mut().poll(cx));
        }
        // Reads of at most a twentieth of a second's worth keep the pace smooth.
        let chunk = usize::try_from(limit / 20)
            .unwrap_or(usize::MAX)
            .clamp(1, 256 * 1024);
        let n = if buf.remaining() <= chunk {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            buf.filled().len() - before
        } else {
            let mut limited = ReadBuf::new(buf.initialize_unfilled_to(chunk));
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
            let n = limited.filled().len();
            buf.advance(n);
            n
        };
        let start = this.next_read.map_or(now, |at| at.max(now));
        this.next_read = Some(start + Duration::from_secs_f64(n as f64 / limit as f64));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(flavor = "current_thread")]
    async fn throttle_paces_reads() {
        let data = vec![7u8; 20_000];
        let limit = Arc::new(AtomicU64::new(100_000));
        let mut reader = Throttled::new(&data[..], Arc::clone(&limit));
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        // 20 kB at 100 kB/s in reads of 5 kB: three waits of 50 ms at least.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(140), "took {took:?}");

        limit.store(0, Ordering::Relaxed);
        let mut reader = Throttled::new(&data[..], limit);
        let started = std::time::Instant::now();
        out.clear();
        reader.read_to_end(&mut out).await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
