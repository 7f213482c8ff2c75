//! Helpers that the end-to-end tests (`tests/support`), the backend tests
//! (`backends/tests`) and the benchmarks (`bench/`) all need: a free port
//! and a process's CPU time. One copy here instead of one per crate.

pub mod postgres;

use std::net::TcpListener;

/// A port nobody listens on right now, or why none could be had.
pub fn try_free_port() -> std::io::Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// A port nobody listens on right now; panics (in a test) when the machine
/// has none to give.
pub fn free_port() -> u16 {
    try_free_port().expect("no free port")
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`,
/// 100 on every Linux this runs on).
pub const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU time (user + system, in clock ticks) a process has used, from
/// `/proc`; None where there is no `/proc` or the process is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat)
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
    fn this_process_has_a_free_port_and_cpu_time() {
        assert_ne!(free_port(), 0);
        assert!(cpu_ticks(std::process::id()).is_some());
    }
}
