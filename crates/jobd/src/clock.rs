//! Injectable time.
//!
//! Every time jobd stores or compares comes from a [`Clock`], so leases,
//! backoff and cron are tested in simulated time ([`ManualClock`]) and never
//! with real sleeps.  Times are milliseconds since the Unix epoch (UTC).
//!
//! The wall clock can step (an NTP correction, a VM resumed after hours): a
//! [`Clock`] also tells a steady time that never steps, shared by every
//! process of one boot of the host ([`Steady`]), so the store can tell a
//! step from time passing and keep a step from expiring live leases.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// A time that never steps: milliseconds since the host booted (Linux
/// `CLOCK_BOOTTIME`, which also counts suspended time), the same in every
/// process of that boot, with an id of the boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steady {
    pub boot: u64,
    pub ms: Millis,
}

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;

    /// Now on a clock that never steps (see [`Steady`]); `None` where there
    /// is none, and then steps of the wall clock go unnoticed.
    fn steady(&self) -> Option<Steady> {
        None
    }

    /// This is the host's real wall clock ([`SystemClock`]): a store shared
    /// by several hosts may then use its own server's clock instead, so that
    /// every host's leases are measured on one clock.
    fn is_wall_clock(&self) -> bool {
        false
    }
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    /// The id of this boot of the host (Linux's random boot id), read once.
    fn boot_id() -> u64 {
        static BOOT: OnceLock<u64> = OnceLock::new();
        *BOOT.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .ok()
                .and_then(|id| u64::from_str_radix(&id.replace('-', "")[..16], 16).ok())
                .unwrap_or(0)
        })
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }

    fn is_wall_clock(&self) -> bool {
        true
    }

    #[cfg(target_os = "linux")]
    fn steady(&self) -> Option<Steady> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a timespec for the call to fill.
        if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
            return None;
        }
        Some(Steady {
            boot: SystemClock::boot_id(),
            ms: ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000,
        })
    }
}

/// A clock that only moves when told to; clones share the same time.
/// [`advance`](ManualClock::advance) and [`set`](ManualClock::set) are time
/// passing; [`step`](ManualClock::step) is the wall clock being stepped
/// (its steady time does not move), [`reboot`](ManualClock::reboot) a new
/// boot of the host.
#[derive(Debug, Clone)]
pub struct ManualClock {
    wall: Arc<AtomicI64>,
    /// The sum of the steps so far: steady time is `wall - stepped`.
    stepped: Arc<AtomicI64>,
    boot: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at `start_ms`.
    pub fn new(start_ms: Millis) -> ManualClock {
        ManualClock {
            wall: Arc::new(AtomicI64::new(start_ms)),
            stepped: Arc::new(AtomicI64::new(0)),
            boot: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.wall.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Set the clock to `ms` (time passes to there, or back).
    pub fn set(&self, ms: Millis) {
        self.wall.store(ms, Ordering::SeqCst);
    }

    /// Step the wall clock by `by_ms` (negative: back) while no time
    /// passes, as an NTP correction or a resumed VM does.
    pub fn step(&self, by_ms: i64) {
        self.stepped.fetch_add(by_ms, Ordering::SeqCst);
        self.wall.fetch_add(by_ms, Ordering::SeqCst);
    }

    /// A new boot of the host: a new boot id.
    pub fn reboot(&self) {
        self.boot.fetch_add(1, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.wall.load(Ordering::SeqCst)
    }

    fn steady(&self) -> Option<Steady> {
        Some(Steady {
            boot: self.boot.load(Ordering::SeqCst),
            ms: self.wall.load(Ordering::SeqCst) - self.stepped.load(Ordering::SeqCst),
        })
    }
}

/// `d` in whole milliseconds, saturating.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
