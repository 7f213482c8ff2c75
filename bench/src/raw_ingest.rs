//! The raw HTTP ingest baseline: a bare hyper server that does what the
//! sidecar's ingest must do at the least (read the body, parse the JSON
//! call or array of calls, write each call as one record) with the same
//! group commit as [`raw::spool`](crate::raw::spool), and answers `202`
//! once the commit holding the request is on disk.
//!
//! It runs in its own process (binary `rawingest`), as the sidecar does, so
//! the load generator in the `e2e` process does not share its runtime. The
//! `ingest` case compares the sidecar with it (`ratio ingest-hyper`):
//! beside raw redb alone, that separates what HTTP and JSON cost on the
//! same two cores from what the sidecar adds (translation, filters, its
//! own spool layout).

use std::convert::Infallible;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::raw::{group_commit_writer, Committed, Submit};

/// Serve on `listener` until the process ends, committing to a redb file
/// at `path`.
pub async fn serve(listener: TcpListener, path: &std::path::Path) -> Result<(), String> {
    let (tx, _writer) = group_commit_writer(path, None, Arc::new(AtomicU64::new(0)))?;
    crate::sink::serve_http1(listener, move |req| handle(tx.clone(), req)).await;
    Ok(())
}

async fn handle(tx: mpsc::Sender<Submit>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = |status: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = status;
        Ok(r)
    };
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST);
    };
    // The same first step as the sidecar: the body into JSON values.
    let calls = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(calls)) => calls,
        Ok(call @ serde_json::Value::Object(_)) => vec![call],
        _ => return answer(StatusCode::BAD_REQUEST),
    };
    // One record per call, serialized again (the sidecar writes the
    // event's JSON, not the request's bytes).
    let mut records = Vec::with_capacity(calls.len());
    for call in &calls {
        match serde_json::to_vec(call) {
            Ok(r) => records.push(Bytes::from(r)),
            Err(_) => return answer(StatusCode::BAD_REQUEST),
        }
    }
    let (done, committed) = tokio::sync::oneshot::channel();
    if tx.send((records, Committed::Task(done))).is_err() || committed.await.is_err() {
        return answer(StatusCode::SERVICE_UNAVAILABLE);
    }
    answer(StatusCode::ACCEPTED)
}
