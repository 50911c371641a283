//! The accept loop of both ports, on hyper directly (warp's own server has no header read
//! timeout and no bound on connections, so a few thousand idle sockets could pin the
//! process forever).
//!
//! - At most `max_connections` connections are open per port; one more is answered a
//!   canned 503 and closed at once, so a flood of idle sockets costs nothing but the
//!   accept.
//! - A connection must send a request's headers within the header read timeout (which
//!   also bounds the idle time between requests on a kept-alive connection), or it is
//!   closed. The body has its own timeout (`HTTP_BODY_TIMEOUT_S`, in `http::body`).
//! - A client that does not read what it is sent pins at most the connection's send
//!   buffer (`HTTP_SEND_BUFFER_BYTES`) in the kernel; a change feed it does not read
//!   falls behind and is closed (`crate::feed`).
//! - Stopping: the listener closes, connections finish their requests in flight and
//!   close (hyper's graceful shutdown); the caller bounds the wait.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::IntGauge;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use warp::reply::Response;

use crate::service::Problem;
use crate::service::error::RETRY_AFTER_S;

/// Closes the connection a request came on (put into every request's extensions): how
/// the change feed drops a consumer that cannot keep up.
#[derive(Debug, Clone)]
pub struct ConnectionCloser(pub CancellationToken);

/// Puts the connection's [`ConnectionCloser`] into every request.
#[derive(Clone)]
struct WithCloser<S> {
    inner: S,
    closer: CancellationToken,
}

impl<S, B> tower_service::Service<http::Request<B>> for WithCloser<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request
            .extensions_mut()
            .insert(ConnectionCloser(self.closer.clone()));
        self.inner.call(request)
    }
}

/// What a port's server is allowed.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Longest wait for a request's headers (and idle time between requests).
    pub header_read_timeout: Duration,
    /// The kernel's send buffer per connection: what a client that does not read its
    /// responses (or its change feed) can pin in memory, instead of the 4 MB Linux would
    /// grow it to.
    pub send_buffer: usize,
}

/// A running server.
pub struct Server {
    stop: CancellationToken,
    done: JoinHandle<()>,
}

/// The answer to a connection over the limit.
static REFUSED: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = Problem::new(503, "too many open connections").to_json();
    let mut response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: {RETRY_AFTER_S}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    response
});

impl Server {
    /// Serves `service` on `listener` until [`Server::stop`]. The accept loop and every
    /// connection run in `tasks`.
    pub fn spawn<S>(
        tasks: &TaskTracker,
        listener: TcpListener,
        service: S,
        limits: Limits,
        open: IntGauge,
    ) -> Self
    where
        S: tower_service::Service<
                http::Request<Incoming>,
                Response = Response,
                Error = Infallible,
                Future: Send + 'static,
            > + Clone
            + Send
            + 'static,
    {
        let stop = CancellationToken::new();
        let done = tasks.spawn(accept_loop(
            tasks.clone(),
            listener,
            service,
            limits,
            open,
            stop.clone(),
        ));
        Self { stop, done }
    }

    /// Stops accepting, then waits at most `grace` for the connections to finish what
    /// they are serving. True when they did.
    pub async fn stop(self, grace: Duration) -> bool {
        self.stop.cancel();
        tokio::time::timeout(grace, self.done).await.is_ok()
    }
}

async fn accept_loop<S>(
    tasks: TaskTracker,
    listener: TcpListener,
    service: S,
    limits: Limits,
    open: IntGauge,
    stop: CancellationToken,
) where
    S: tower_service::Service<
            http::Request<Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read_timeout));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Most likely out of file descriptors: back off instead of spinning.
                tracing::error!(error.message = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(limits.send_buffer);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tasks.spawn(refuse(stream));
            continue;
        };
        let closer = CancellationToken::new();
        let service = WithCloser {
            inner: service.clone(),
            closer: closer.clone(),
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        let open = open.clone();
        open.inc();
        tasks.spawn(async move {
            tokio::select! {
                ended = connection => if let Err(e) = ended {
                    tracing::debug!(error.message = %e, "connection ended with an error");
                },
                () = closer.cancelled() => tracing::debug!("connection closed by the service"),
            }
            open.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection over the limit with a canned 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&REFUSED)).await;
    let _ = stream.shutdown().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let text = std::str::from_utf8(&REFUSED).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(problem["status"], 503);
    }
}
