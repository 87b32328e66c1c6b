//! What the tool asks of the operating system: a monotonic clock shared by
//! producers and subscribers, CPU pinning, the open-files limit, and the
//! target's resident memory.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Nanoseconds since the tool started, on the monotonic clock. Producers
/// put it into each event (`metadata.sentAtNs`) and subscribers subtract it
/// from their own reading: both run in this process, so no clock sync is
/// needed and wall-clock jumps do not matter.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Pins the calling thread, and so every thread it starts afterwards (the
/// tokio runtime is built after this), to `cpu`.
pub fn pin_to(cpu: usize) -> Result<(), String> {
    // SAFETY: as above; sched_setaffinity reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(())
}

/// Raises the soft open-files limit to at least `wanted` (up to the hard
/// limit). Children inherit it, so a target started afterwards can accept
/// as many connections as this process opens. Returns the new soft limit,
/// or what to tell the user when the hard limit is too low.
pub fn raise_nofile(wanted: u64) -> Result<u64, String> {
    // SAFETY: rlimit is plain data; getrlimit fills it, setrlimit reads it.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        if lim.rlim_cur >= wanted {
            return Ok(lim.rlim_cur);
        }
        if lim.rlim_max < wanted {
            return Err(format!(
                "{wanted} open files are needed but the hard limit is {}: \
                 run `ulimit -n {wanted}` as root (or raise nofile in \
                 /etc/security/limits.conf) and try again",
                lim.rlim_max
            ));
        }
        lim.rlim_cur = wanted;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(format!(
                "setrlimit(NOFILE, {wanted}): {}; run `ulimit -n {wanted}` first",
                std::io::Error::last_os_error()
            ));
        }
        Ok(wanted)
    }
}

/// The hard open-files limit (what an unprivileged process may raise to).
pub fn hard_nofile_limit() -> u64 {
    // SAFETY: as above.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_max
    }
}

/// The current soft open-files limit.
pub fn nofile_limit() -> u64 {
    // SAFETY: as above.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur
    }
}

/// CPU time (user + system) a process has used so far, from
/// /proc/PID/stat: on a shared, noisy machine the CPU a target spends per
/// delivery is steadier than the deliveries it manages per second.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    parse_stat(&text, u64::try_from(ticks).ok().filter(|&t| t > 0)?)
}

fn parse_stat(text: &str, ticks_per_sec: u64) -> Option<Duration> {
    // The command name (field 2) may hold spaces and parentheses: count
    // fields from the last `)`. utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks_per_sec as f64,
    ))
}

/// Resident memory of a process, from /proc/PID/status, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss: u64,
    /// VmHWM: the kernel's own peak of VmRSS over the process's life.
    pub hwm: u64,
}

pub fn read_memory(pid: u32) -> Option<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

fn parse_status(text: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:").unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tagent-events\nVmPeak:\t  900000 kB\nVmHWM:\t   52000 kB\nVmRSS:\t   51200 kB\nThreads:\t4\n";
        assert_eq!(
            parse_status(text),
            Some(Memory {
                rss: 51200 * 1024,
                hwm: 52000 * 1024
            })
        );
        assert_eq!(parse_status("Name:\tzombie\n"), None);
    }

    #[test]
    fn parses_proc_stat() {
        let text = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat(text, 100), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat("4242 (short) S 1", 100), None);
        assert!(cpu_time(std::process::id()).is_some());
    }

    #[test]
    fn reads_our_own_memory() {
        let me = read_memory(std::process::id()).expect("/proc/self/status");
        assert!(me.rss > 0 && me.hwm >= me.rss);
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
    }
}
