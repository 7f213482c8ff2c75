//! The accept loop: serves the router over HTTP/1.1 with the limits
//! `axum::serve` cannot set, so no client can hold the process or its
//! connection slots for ever.
//!
//! - **header timeout** (`server.header_timeout_ms`): hyper closes a
//!   connection that has not sent a whole request head this long after its
//!   first byte or after the previous response (idle keep-alive included);
//! - **connection cap** (`server.max_connections`): a semaphore permit per
//!   connection; at the cap the loop stops accepting, and new clients wait
//!   in the kernel's accept queue until a slot frees (at the latest after
//!   the header timeout of an idle one);
//! - **hard shutdown**: on the shutdown signal, stop accepting, ask every
//!   connection to finish its current request, and abort whatever is still
//!   open at the deadline, so a stalled client cannot keep the process up.
//!
//! WebSocket upgrades (the gateway backend): `with_upgrades` hands the
//! socket to the upgrade's own task once the 101 is written, and the
//! connection future here completes, so its slot is freed and neither the
//! header timeout nor the shutdown deadline applies to the live session;
//! the gateway bounds its sessions itself (`max_sessions`) and sends op 7
//! on shutdown (`Endpoint::drain`, before this loop stops).
//!
//! The body timeout is per request, where the body is read
//! ([`super::body::read_bounded`]). HTTP/1.1 only: hyper's protocol
//! auto-detection reads the preface without any timeout, and nothing that
//! calls the sidecar needs HTTP/2.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The listener's limits, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Serve `app` on `listener` until `shutdown` completes, then drain
/// connections until `deadline()` (called once the signal came) and abort
/// the rest. `on_shutdown` runs right after the signal, before draining.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
    deadline: impl FnOnce() -> Instant,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);

    tokio::pin!(shutdown);
    loop {
        // Take a slot before accepting, so at the cap the kernel queues
        // new clients instead of us holding sockets we cannot serve.
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let conn = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()))
            .with_upgrades();
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    // Finish the request in progress, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection closed with an error");
            }
        });
    }
    drop(listener);

    let deadline = deadline();
    let _ = stop_tx.send(true);
    let open = conns.len();
    let drained = tokio::time::timeout_at(deadline, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            still_open = conns.len(),
            of = open,
            "shutdown deadline reached; closing connections that are still open"
        );
        conns.shutdown().await;
    }
}
