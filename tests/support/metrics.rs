//! Reading numbers: `/metrics` samples and a process's CPU time.

/// The value of one sample of `/metrics`: the line that starts with `name{`
/// and holds every label in `labels` (or is exactly `name` when there are
/// none).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let matches = if labels.is_empty() {
            series == name
        } else {
            series.starts_with(&format!("{name}{{")) && labels.iter().all(|lab| series.contains(lab))
        };
        if matches {
            value.parse().ok()
        } else {
            None
        }
    })
}

// Shared with `bench/`; not every test binary uses it.
#[allow(unused_imports)]
pub use event_pusher_testkit::cpu_ticks;
