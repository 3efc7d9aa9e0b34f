//! CPU time, memory, threads and open files of a process, read from `/proc` (Linux only).
//! Shared by the bench and the soak.

/// The fields of `/proc/PID/stat` after the command name (field 2), which may hold spaces and
/// parentheses: they are counted from the last `)`.
fn after_name(stat: &str) -> Result<&str, String> {
    stat.rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| format!("/proc stat has no ')': {stat:?}"))
}

/// The state letter (field 3: `R`, `S`, `Z` for a zombie, ...) from the text of `/proc/PID/stat`.
pub fn state(stat: &str) -> Result<char, String> {
    after_name(stat)?
        .split_whitespace()
        .next()
        .and_then(|s| s.chars().next())
        .ok_or_else(|| format!("/proc stat has no state: {stat:?}"))
}

/// utime + stime in clock ticks, from the text of `/proc/PID/stat`.
pub fn cpu_ticks(stat: &str) -> Result<u64, String> {
    let after = after_name(stat)?;
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
    status_field(status, "VmRSS")
}

/// The number of threads, from the text of `/proc/PID/status`.
pub fn threads(status: &str) -> Result<u64, String> {
    status_field(status, "Threads")
}

/// A numeric `Name:   value [kB]` line of `/proc/PID/status`.
fn status_field(status: &str, name: &str) -> Result<u64, String> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .ok_or_else(|| format!("/proc status has no {name} line"))?;
    let raw = line.trim().trim_end_matches("kB").trim();
    raw.parse()
        .map_err(|e| format!("/proc status {name} {raw:?}: {e}"))
}

pub fn read_stat(pid: u32) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("read /proc/{pid}/stat: {e}"))
}

pub fn read_cpu_ticks(pid: u32) -> Result<u64, String> {
    cpu_ticks(&read_stat(pid)?)
}

/// Whether the process exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    read_stat(pid).is_ok_and(|s| state(&s).is_ok_and(|c| c != 'Z' && c != 'X'))
}

pub fn read_status(pid: u32) -> Result<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))
}

pub fn read_rss_kib(pid: u32) -> Result<u64, String> {
    rss_kib(&read_status(pid)?)
}

/// Open file descriptors: the entries of `/proc/PID/fd` (needs the same user as the process).
pub fn read_fd_count(pid: u32) -> Result<u64, String> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("read /proc/{pid}/fd: {e}"))?;
    Ok(dir.filter(|e| e.is_ok()).count() as u64)
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
        assert_eq!(state(stat).unwrap(), 'S');
        assert_eq!(state("7 (a) b) Z 1").unwrap(), 'Z');
        assert!(state("7 (a)").is_err());
    }

    #[test]
    fn rss_is_read_in_kib() {
        let status = "Name:\tenvoy\nVmPeak:\t 100 kB\nVmRSS:\t   67584 kB\nThreads:\t9\n";
        assert_eq!(rss_kib(status).unwrap(), 67584);
        assert!(rss_kib("Name: x\n").unwrap_err().contains("VmRSS"));
    }

    #[test]
    fn threads_are_read_and_prefixes_do_not_match() {
        let status = "Name:\tmesh-proxy\nThreadsX:\t1\nThreads:\t7\nVmRSS:\t 10 kB\n";
        assert_eq!(threads(status).unwrap(), 7);
        assert!(threads("Threads:\tmany\n").unwrap_err().contains("many"));
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        read_cpu_ticks(pid).unwrap();
        assert!(is_alive(pid));
        assert!(read_rss_kib(pid).unwrap() > 0);
        assert!(threads(&read_status(pid).unwrap()).unwrap() >= 1);
        assert!(
            read_fd_count(pid).unwrap() >= 3,
            "stdin, stdout, stderr at least"
        );
    }
}
