//! Reading a process's resources from `/proc`: CPU time and resident set,
//! for the tests that bound what an idle sidecar costs and for the
//! benchmarks' CPU and memory columns.

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`,
/// 100 on every Linux this runs on).
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU time (user + system, in clock ticks) a process has used, from
/// `/proc`; None where there is no `/proc` or the process is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
}

/// CPU time (user + system) a process has used so far, in seconds; 0 when
/// it cannot be read (the process is gone).
pub fn cpu_secs(pid: u32) -> f64 {
    cpu_ticks(pid).unwrap_or(0) as f64 / CLOCK_TICKS_PER_SEC
}

/// utime + stime from the text of `/proc/PID/stat`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields after the command name, which is in parentheses and may hold
    // spaces; utime and stime are fields 14 and 15 of the whole line, 12
    // and 13 (indexes 11 and 12) after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Peak and current resident set of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub hwm_kb: u64,
    pub rss_kb: u64,
}

/// The resident set of `pid` (zeros when it cannot be read).
pub fn rss_of(pid: u32) -> Rss {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        hwm_kb: field("VmHWM:"),
        rss_kb: field("VmRSS:"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_after_a_command_name_with_spaces() {
        let stat = "42 (a b) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(cpu_ticks(std::process::id()).is_some());
        assert!(rss_of(std::process::id()).rss_kb > 0);
    }
}
