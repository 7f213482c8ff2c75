//! Per-provider counters of one push backend (sent, failed, pruned, send
//! duration) and the devices gauge, rendered into `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use event_pusher_core::metrics::{label, Histogram};

/// The providers, in metric order.
pub const PROVIDERS: [&str; 4] = ["fcm", "apns", "webpush", "mongoosepush"];

/// One provider's counters.
#[derive(Default)]
pub struct ProviderMetrics {
    /// Notifications the provider accepted.
    pub sent: AtomicU64,
    /// Failed sends (each failed attempt once).
    pub failed: AtomicU64,
    /// Devices removed because the provider said the token is invalid.
    pub pruned: AtomicU64,
    /// One send, request to answer.
    pub latency: Histogram,
}

/// A push backend's counters, by provider.
#[derive(Default)]
pub struct PushMetrics {
    providers: [ProviderMetrics; 4],
}

impl PushMetrics {
    pub fn provider(&self, name: &str) -> &ProviderMetrics {
        let i = PROVIDERS.iter().position(|p| *p == name).unwrap_or(0);
        &self.providers[i]
    }
}

/// What `/metrics` needs of one push backend.
pub struct Rendered<'a> {
    pub name: &'a str,
    pub metrics: &'a PushMetrics,
    pub devices: std::collections::BTreeMap<&'static str, u64>,
}

/// Write the push series of every push backend.
pub fn render(out: &mut String, backends: &[Rendered<'_>]) {
    if backends.is_empty() {
        return;
    }
    type Get = fn(&ProviderMetrics) -> &AtomicU64;
    let counters: [(&str, &str, Get); 3] = [
        (
            "event_pusher_push_sent_total",
            "Notifications accepted by the provider.",
            |m| &m.sent,
        ),
        ("event_pusher_push_failed_total", "Failed notification sends.", |m| {
            &m.failed
        }),
        (
            "event_pusher_push_devices_pruned_total",
            "Devices removed because the provider said their token is no longer valid.",
            |m| &m.pruned,
        ),
    ];
    for (name, help, get) in counters {
        head(out, name, "counter", help);
        for b in backends {
            for p in PROVIDERS {
                let v = get(b.metrics.provider(p)).load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}{{backend=\"{}\",provider=\"{p}\"}} {v}", label(b.name));
            }
        }
    }
    head(out, "event_pusher_push_devices", "gauge", "Registered devices.");
    for b in backends {
        for p in PROVIDERS {
            let v = b.devices.get(p).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "event_pusher_push_devices{{backend=\"{}\",provider=\"{p}\"}} {v}",
                label(b.name)
            );
        }
    }
    let hist = "event_pusher_push_send_duration_seconds";
    head(out, hist, "histogram", "Duration of one notification send.");
    for b in backends {
        for p in PROVIDERS {
            let labels = format!("backend=\"{}\",provider=\"{p}\"", label(b.name));
            b.metrics.provider(p).latency.render(out, hist, &labels);
        }
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}
