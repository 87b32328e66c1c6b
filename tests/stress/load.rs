//! What every stress scenario runs under: another process keeping a core
//! busy, one scenario at a time, and a size that CI can afford.
//!
//! Why a busy core: the seam race of the delivery-guarantees issue showed
//! only on a clean clone with the other core taken; on an idle machine the
//! broker's actors always won the race the test was built to lose. So each
//! scenario starts a CPU burner (`yes > /dev/null`) and stops it by its pid
//! when the scenario ends, pass or fail.
//!
//! Why one at a time: the test harness runs a file's tests in parallel, and
//! three scenarios each with its own burner would load three cores' worth
//! on a two-core machine: then every wait is a timeout, not a finding.

use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};

/// The conditions of one scenario: it runs alone, beside a busy core.
pub struct Stressed {
    _cpu: CpuLoad,
    _alone: MutexGuard<'static, ()>,
}

impl Stressed {
    /// Waits for the scenario before to end, then loads a core.
    pub fn begin() -> Stressed {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        // A scenario that failed poisoned the lock; the next one still runs.
        let alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        Stressed {
            _cpu: CpuLoad::start(),
            _alone: alone,
        }
    }
}

/// A process spinning on a core for as long as this lives.
pub struct CpuLoad(Child);

impl CpuLoad {
    /// Starts `yes`, writing to nowhere.
    pub fn start() -> CpuLoad {
        let child = Command::new("yes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start `yes` to load a core");
        CpuLoad(child)
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many times CI's bounded run repeats a scenario's unit of work
/// (`STRESS_SCALE`, default 1): set it to 10 for a long soak run.
pub fn scale() -> usize {
    std::env::var("STRESS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1)
}

/// A small deterministic generator (xorshift), so that a failing round can
/// be told by its number and rerun alike; the tests need no `rand`.
pub struct Dice(u64);

impl Dice {
    /// A generator seeded by `seed` (any value; zero is moved off).
    pub fn new(seed: u64) -> Dice {
        Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
