//! The operations routes and series: `DELETE /v1/users/{jid}` (erasure),
//! the `since`/`until` window of a dead-letter replay, and the overflow,
//! throttle and retention counters on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use event_pusher_core::metrics::label;
use event_pusher_core::spool::Window;

use super::error;
use crate::operations::{erase_user, EraseError};
use crate::state::AppState;

/// `DELETE /v1/users/{jid}`: erase everything held about a user (a bare
/// JID; the path segment is percent-decoded by the router).
#[utoipa::path(delete, path = "/v1/users/{jid}", tag = "admin", operation_id = "erase_user",
    params(("jid" = String, Path, description = "A bare JID, percent-encoded (`alice%40example.com`)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Erased (zeros when nothing was held)", body = super::schema::Erased),
        (status = 400, description = "Not a JID, or a full JID", body = super::schema::ErrorBody),
        (status = 401, description = "Bad or missing token", body = super::schema::ErrorBody),
        (status = 404, description = "No such endpoint (an empty jid)", body = super::schema::ErrorBody),
        (status = 503, description = "A backend or the spool failed part way: what was erased stays erased; call again to finish",
            body = super::schema::ErrorBody),
    ))]
pub async fn delete_user(State(state): State<Arc<AppState>>, Path(jid): Path<String>) -> Response {
    if let Err(why) = event_pusher_core::jid::validate(&jid) {
        return super::invalid_field(format!("jid: \"{jid}\" is not a JID: {why}"));
    }
    if event_pusher_core::jid::bare(&jid) != jid {
        return super::invalid_field(format!("jid: \"{jid}\" must be a bare JID (no /resource)"));
    }
    match erase_user(&state, &jid).await {
        Ok(erased) => (StatusCode::OK, Json(erased)).into_response(),
        Err(e @ EraseError::Backend { .. }) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(EraseError::Spool(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// A replay's `since`/`until` (RFC 3339), checked; the error names the field.
pub fn window(since: Option<&str>, until: Option<&str>) -> Result<Window, String> {
    let parse = |field: &str, v: Option<&str>| {
        v.map(|s| {
            event_pusher_core::event::timestamp_millis::parse(s)
                .map_err(|e| format!("{field}: \"{s}\" is not an RFC 3339 time: {e}"))
        })
        .transpose()
    };
    let window = Window {
        since: parse("since", since)?,
        until: parse("until", until)?,
    };
    if let (Some(s), Some(u)) = (window.since, window.until) {
        if s > u {
            return Err(format!(
                "until: {} is before since ({})",
                until.unwrap_or_default(),
                since.unwrap_or_default()
            ));
        }
    }
    Ok(window)
}

/// `event_pusher_overflow_dead_lettered_total`,
/// `event_pusher_throttled_seconds_total` and
/// `event_pusher_dead_letters_expired_total`, per backend.
pub fn render_metrics(state: &AppState, out: &mut String) {
    let rows: Vec<(String, u64, f64, u64)> = state
        .engine
        .snapshot()
        .into_iter()
        .map(|(b, s)| {
            let labels = format!("backend=\"{}\",kind=\"{}\"", label(&b.name), b.kind);
            let slot = state.engine.slot(&format!("{}.{}", b.kind, b.name));
            let expired = slot
                .map(|slot| state.spool().slot(slot).intake.expired.load(Ordering::Relaxed))
                .unwrap_or(0);
            (labels, s.overflow_dead_lettered, s.throttled_seconds, expired)
        })
        .collect();
    let series: [(&str, &str); 3] = [
        (
            "event_pusher_overflow_dead_lettered_total",
            "Events dead-lettered on arrival: queue full with overflow = \"dead_letter\", or subscription disabled.",
        ),
        (
            "event_pusher_throttled_seconds_total",
            "Seconds ready events waited for rate_limit_per_s.",
        ),
        (
            "event_pusher_dead_letters_expired_total",
            "Dead letters deleted by spool.dead_letter_retention_s.",
        ),
    ];
    for (i, (name, help)) in series.into_iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for (labels, overflow, throttled, expired) in &rows {
            let _ = match i {
                0 => writeln!(out, "{name}{{{labels}}} {overflow}"),
                1 => writeln!(out, "{name}{{{labels}}} {throttled}"),
                _ => writeln!(out, "{name}{{{labels}}} {expired}"),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_fields_are_checked_by_name() {
        assert_eq!(window(None, None).unwrap(), Window::default());
        assert!(window(Some("yesterday"), None).unwrap_err().starts_with("since:"));
        assert!(window(None, Some("x")).unwrap_err().starts_with("until:"));
        let e = window(Some("2026-01-02T00:00:00Z"), Some("2026-01-01T00:00:00Z")).unwrap_err();
        assert!(e.starts_with("until:"), "{e}");
        assert!(window(Some("2026-01-01T00:00:00Z"), Some("2026-01-02T00:00:00Z")).is_ok());
    }
}
