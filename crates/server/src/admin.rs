//! The plaintext admin listener: /livez, /readyz, /metrics. Kubernetes probes cannot speak mutual
//! TLS, so these live on their own port, which must not be exposed outside the cluster.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::gateway::Gateway;

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub fn spawn(listener: TcpListener, gw: Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    let mut shutdown = gw.shutdown.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let gw = gw.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| respond(gw.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn respond(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body, content_type) = match req.uri().path() {
        // Liveness checks nothing external — a database outage must not restart every replica —
        // except the one state only a restart leaves: a COMMIT whose outcome is unknown.
        "/livez" => match gw.store.is_writable() {
            true => (StatusCode::OK, "ok\n".to_owned(), "text/plain"),
            false => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not live: the access-log writer stopped after a failed commit; restart the process\n"
                    .to_owned(),
                "text/plain",
            ),
        },
        "/readyz" => match readiness(&gw).await {
            Ok(()) => (StatusCode::OK, "ready\n".to_owned(), "text/plain"),
            Err(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
                "text/plain",
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            gw.metrics.render(gw.now().unix_timestamp()),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_owned(),
            "text/plain",
        ),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

/// Ready when the database answers and the access log accepts writes (the writer is not poisoned)
/// and the gateway is not shutting down.
pub async fn readiness(gw: &Gateway) -> Result<(), String> {
    if *gw.shutdown.borrow() {
        return Err("shutting down".into());
    }
    if !gw.store.is_writable() {
        return Err("the access-log writer stopped after a failed commit".into());
    }
    if let Some(fault) = gw.log_fault() {
        return Err(format!("access log cannot be vouched for: {fault}"));
    }
    gw.store.ping().await.map_err(|e| e.to_string())
}
