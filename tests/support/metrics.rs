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

/// CPU time (user + system, in clock ticks) a process has used, from
/// `/proc`; None where there is no `/proc`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
