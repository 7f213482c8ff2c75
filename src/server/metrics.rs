//! `GET /metrics`: Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use event_pusher_core::metrics::label;

use crate::state::AppState;

#[utoipa::path(get, path = "/metrics", tag = "probes", security(()),
    responses((status = 200, description = "Prometheus text format (docs/operations.md lists every series)", content_type = "text/plain")))]
pub async fn render(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::with_capacity(8192);
    let m = &state.metrics;

    head(
        &mut out,
        "event_pusher_ingest_requests_total",
        "counter",
        "Ingest requests by answer status.",
    );
    for (status, n) in m.by_status() {
        let _ = writeln!(out, "event_pusher_ingest_requests_total{{status=\"{status}\"}} {n}");
    }
    single(
        &mut out,
        "event_pusher_ingest_events_total",
        "counter",
        "Events accepted (202).",
        m.events_accepted.load(Ordering::Relaxed),
    );
    single(
        &mut out,
        "event_pusher_chain_stopped_total",
        "counter",
        "Events stopped by a filter.",
        m.events_stopped.load(Ordering::Relaxed),
    );
    state.sources.render_metrics(&mut out);
    if let Some(cluster) = &state.cluster {
        cluster.render_metrics(&mut out);
    }
    event_pusher_filters::metrics::render(&mut out);
    state.reloader.render_metrics(&mut out);
    for endpoint in &state.endpoints {
        endpoint.render_metrics(&mut out);
    }
    single(
        &mut out,
        "event_pusher_spool_bytes",
        "gauge",
        "Bytes of event data held in the spool.",
        state.spool().stored_bytes(),
    );
    single(
        &mut out,
        "event_pusher_spool_fanout_pending",
        "gauge",
        "Queue rows of large fan-outs accepted (and counted as queued) but not yet written to their queues.",
        state.spool().fanout_pending(),
    );
    single(
        &mut out,
        "event_pusher_spool_writable",
        "gauge",
        "0 after a spool write failed, until one succeeds again.",
        u8::from(state.spool().is_healthy()),
    );

    let (backends, statuses): (Vec<_>, Vec<_>) = state.engine.snapshot().into_iter().unzip();
    let labels: Vec<String> = backends
        .iter()
        .map(|b| format!("backend=\"{}\",kind=\"{}\"", label(&b.name), b.kind))
        .collect();
    let series: [(&str, &str, &str, Getter); 9] = [
        ("event_pusher_delivered_total", "counter", "Events delivered.", |s| {
            s.delivered
        }),
        (
            "event_pusher_delivery_failures_total",
            "counter",
            "Failed delivery attempts.",
            |s| s.failed,
        ),
        (
            "event_pusher_retries_total",
            "counter",
            "Attempts scheduled for retry.",
            |s| s.retries,
        ),
        (
            "event_pusher_dead_letters",
            "gauge",
            "Events in the dead-letter store.",
            |s| s.dead_letters,
        ),
        (
            "event_pusher_queue_depth",
            "gauge",
            "Events waiting in the delivery queue.",
            |s| s.queued,
        ),
        ("event_pusher_in_flight", "gauge", "Events being delivered now.", |s| {
            s.in_flight
        }),
        ("event_pusher_paused", "gauge", "1 when the backend is paused.", |s| {
            s.paused as u64
        }),
        (
            "event_pusher_backend_ready",
            "gauge",
            "1 when the backend is started and ready.",
            |s| s.ready as u64,
        ),
        (
            "event_pusher_circuit_open",
            "gauge",
            "1 while the circuit breaker backs the endpoint off.",
            |s| s.circuit_open as u64,
        ),
    ];
    for (name, kind, help, get) in series {
        head(&mut out, name, kind, help);
        for (l, s) in labels.iter().zip(&statuses) {
            let _ = writeln!(out, "{name}{{{l}}} {}", get(s));
        }
    }
    head(
        &mut out,
        "event_pusher_dead_lettered_total",
        "counter",
        "Events moved to dead letters by this process.",
    );
    for (l, b) in labels.iter().zip(&backends) {
        let _ = writeln!(
            out,
            "event_pusher_dead_lettered_total{{{l}}} {}",
            b.stats.dead_lettered.load(Ordering::Relaxed)
        );
    }
    head(
        &mut out,
        "event_pusher_delivery_latency_seconds",
        "histogram",
        "From acceptance (202) to delivery.",
    );
    // Not per webhook subscription: two histograms of a dozen buckets
    // each, times thousands of subscriptions, would swamp a scrape.
    for (l, b) in labels.iter().zip(&backends).filter(|(_, b)| b.kind != WEBHOOK) {
        b.stats
            .latency
            .render(&mut out, "event_pusher_delivery_latency_seconds", l);
    }
    head(
        &mut out,
        "event_pusher_publish_duration_seconds",
        "histogram",
        "Duration of one delivery attempt.",
    );
    // Not per webhook subscription: two histograms of a dozen buckets
    // each, times thousands of subscriptions, would swamp a scrape.
    for (l, b) in labels.iter().zip(&backends).filter(|(_, b)| b.kind != WEBHOOK) {
        b.stats
            .publish
            .render(&mut out, "event_pusher_publish_duration_seconds", l);
    }
    super::operations::render_metrics(&state, &mut out);
    #[cfg(feature = "push")]
    {
        let push: Vec<_> = state.push.backends().iter().map(|b| b.metrics()).collect();
        event_pusher_backends::push::metrics::render(&mut out, &push);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}

/// The kind of webhook subscriptions (`WebhookBackend::KIND`).
const WEBHOOK: &str = "webhook";

/// Reads one number off a backend's status row.
type Getter = fn(&event_pusher_core::delivery::BackendStatus) -> u64;

/// A series with one value and no labels.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
