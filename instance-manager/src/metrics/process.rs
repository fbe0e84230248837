//! `process_…`: the manager process itself (memory, CPU, file descriptors, threads), under
//! the names every Prometheus client library uses, read from `/proc/self`.

use super::family::Sheet;

/// Linux reports CPU times in `/proc` in USER_HZ, 100 per second on every architecture.
const USER_HZ: f64 = 100.0;

/// Adds the `process_…` families; figures that cannot be read are left out.
pub fn render(sheet: &mut Sheet) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
    };
    if let Some(rss) = kib("VmRSS:") {
        sheet.gauge0("process_resident_memory_bytes", "Resident memory of the instance manager in bytes", rss * 1024.0);
    }
    if let Some(vsz) = kib("VmSize:") {
        sheet.gauge0("process_virtual_memory_bytes", "Virtual memory of the instance manager in bytes", vsz * 1024.0);
    }
    if let Some(threads) = kib("Threads:") {
        sheet.gauge0("process_threads", "Threads of the instance manager", threads);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        sheet.gauge0("process_open_fds", "Open file descriptors of the instance manager", fds.count() as f64);
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces), counted from field 3 (state).
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        sheet.counter0(
            "process_cpu_seconds_total",
            "CPU time of the instance manager in seconds",
            (utime + stime) / USER_HZ,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse::<f64>().ok())));
    if let (Some(boot), Some(start)) = (boot, field(22)) {
        sheet.gauge0(
            "process_start_time_seconds",
            "When the instance manager started (Unix time)",
            boot + start / USER_HZ,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_figures_of_this_test_are_read() {
        let mut sheet = Sheet::default();
        render(&mut sheet);
        for name in [
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_threads",
            "process_open_fds",
            "process_cpu_seconds_total",
            "process_start_time_seconds",
        ] {
            assert!(sheet.has(name), "{name} missing");
        }
    }
}
