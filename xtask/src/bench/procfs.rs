//! CPU time and memory of a process, read from `/proc` (Linux only).

/// utime + stime in clock ticks, from the text of `/proc/PID/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from the last `)`.
pub fn cpu_ticks(stat: &str) -> Result<u64, String> {
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| format!("/proc stat has no ')': {stat:?}"))?;
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let raw = fields
            .get(n - 3)
            .ok_or_else(|| format!("/proc stat has no field {n}"))?;
        raw.parse()
            .map_err(|e| format!("/proc stat field {n} {raw:?}: {e}"))
    };
    Ok(field(14)? + field(15)?)
}

/// VmRSS in KiB, from the text of `/proc/PID/status`.
pub fn rss_kib(status: &str) -> Result<u64, String> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("/proc status has no VmRSS line")?;
    let raw = line["VmRSS:".len()..].trim().trim_end_matches("kB").trim();
    raw.parse()
        .map_err(|e| format!("/proc status VmRSS {raw:?}: {e}"))
}

pub fn read_cpu_ticks(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
    cpu_ticks(&text)
}

pub fn read_rss_kib(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    rss_kib(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_utime_plus_stime_even_with_odd_names() {
        let stat = "4242 (mesh (proxy) x) S 1 4242 4242 0 -1 4194560 1510 0 0 0 \
                    731 269 0 0 20 0 3 0 123 456 789";
        assert_eq!(cpu_ticks(stat).unwrap(), 1000);
        assert!(cpu_ticks("4242 (x) S 1").unwrap_err().contains("field 14"));
        assert!(cpu_ticks("no name").unwrap_err().contains("')'"));
    }

    #[test]
    fn rss_is_read_in_kib() {
        let status = "Name:\tenvoy\nVmPeak:\t 100 kB\nVmRSS:\t   67584 kB\nThreads:\t9\n";
        assert_eq!(rss_kib(status).unwrap(), 67584);
        assert!(rss_kib("Name: x\n").unwrap_err().contains("VmRSS"));
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        read_cpu_ticks(pid).unwrap();
        assert!(read_rss_kib(pid).unwrap() > 0);
    }
}
