//! `otlp-sink`: the smallest OTLP/HTTP trace receiver that does the job, for the `trace`
//! phase of scripts/bench: the service exports its spans here (OTLP/HTTP protobuf, POST
//! `/v1/traces`), and the sink counts what arrives. HTTP/1.1 with keep-alive (hyper), on
//! the runtime's `--threads` workers (scripts/bench gives it one).
//!
//! - `POST /v1/traces`: 200, `Content-Type: application/x-protobuf`, an empty body (an
//!   empty `ExportTraceServiceResponse`: everything accepted). The body is decoded
//!   (`opentelemetry-proto` + prost) only to count its spans; a body that does not decode
//!   (JSON, compressed, garbage) is still answered 200 and counted in `otlp_undecoded`.
//! - `GET /stats`: 200, the `BENCH …` line of the counts so far (text/plain), for
//!   snapshots between phases.
//! - anything else: 404, counted in `other_requests`.
//!
//! SIGTERM or SIGINT: the line is printed on stdout (and written to `--report-file` when
//! given), and the sink exits 0. SIGUSR1 writes the line of the counts so far to
//! `--report-file` and goes on.
//!
//! Line: `otlp_requests otlp_bytes otlp_spans otlp_undecoded other_requests
//! otlp_connections cpu_us` (`otlp_bytes`: request bodies as received;
//! `otlp_connections`: TCP connections that carried exports, few when the exporter keeps
//! them alive; `cpu_us`: this process's user + system CPU since it started).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{Line, cpu_us};

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (127.0.0.1:PORT).
    #[arg(long)]
    addr: SocketAddr,
    /// Also write the `BENCH …` line here at exit (and on SIGUSR1).
    #[arg(long)]
    report_file: Option<PathBuf>,
}

#[derive(Default)]
struct Counts {
    /// connections that carried at least one export
    connections: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    spans: AtomicU64,
    undecoded: AtomicU64,
    other: AtomicU64,
}

impl Counts {
    fn line(&self) -> Line {
        Line::new()
            .kv("otlp_requests", self.requests.load(Relaxed))
            .kv("otlp_bytes", self.bytes.load(Relaxed))
            .kv("otlp_spans", self.spans.load(Relaxed))
            .kv("otlp_undecoded", self.undecoded.load(Relaxed))
            .kv("other_requests", self.other.load(Relaxed))
            .kv("otlp_connections", self.connections.load(Relaxed))
            .kv("cpu_us", cpu_us())
    }
}

/// The spans of one export request, or `None` when the body is not OTLP protobuf.
fn spans_in(body: &[u8]) -> Option<u64> {
    let request = ExportTraceServiceRequest::decode(body).ok()?;
    Some(
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum(),
    )
}

async fn handle(
    counts: Arc<Counts>,
    exported_here: Arc<AtomicBool>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = request.uri().path();
    let export = request.method() == Method::POST && path == "/v1/traces";
    let stats = request.method() == Method::GET && path == "/stats";
    if export {
        let body = request.into_body().collect().await?.to_bytes();
        counts.requests.fetch_add(1, Relaxed);
        if !exported_here.swap(true, Relaxed) {
            counts.connections.fetch_add(1, Relaxed);
        }
        counts.bytes.fetch_add(body.len() as u64, Relaxed);
        match spans_in(&body) {
            Some(n) => counts.spans.fetch_add(n, Relaxed),
            None => counts.undecoded.fetch_add(1, Relaxed),
        };
        let mut response = Response::new(Full::new(Bytes::new()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        return Ok(response);
    }
    let mut response;
    if stats {
        response = Response::new(Full::new(Bytes::from(format!("{}\n", counts.line()))));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    } else {
        counts.other.fetch_add(1, Relaxed);
        response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(response)
}

/// Writes the line next to `path` and renames it over `path`: a reader never sees half.
fn write_report(path: &Path, line: &Line) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{line}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

pub async fn run(a: Args) -> Result<Line, String> {
    let listener = tokio::net::TcpListener::bind(a.addr)
        .await
        .map_err(|e| format!("binding {}: {e}", a.addr))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| format!("SIGUSR1: {e}"))?;
    let counts = Arc::new(Counts::default());
    eprintln!("otlp-sink: listening on http://{}/v1/traces", a.addr);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and the like: keep serving the connections we have
                        eprintln!("otlp-sink: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let counts = Arc::clone(&counts);
                let exported_here = Arc::new(AtomicBool::new(false));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| {
                        handle(Arc::clone(&counts), Arc::clone(&exported_here), r)
                    });
                    // keep-alive is hyper's default; errors are the client's business
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = usr1.recv() => {
                if let Some(path) = &a.report_file
                    && let Err(e) = write_report(path, &counts.line())
                {
                    eprintln!("otlp-sink: {e}");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let line = counts.line();
    if let Some(path) = &a.report_file {
        write_report(path, &line)?;
    }
    Ok(line)
}
