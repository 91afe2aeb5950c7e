//! When an open top-up is polled: first after `first`, then at doubling
//! intervals up to `interval_max`, until `horizon` after its creation. The
//! horizon covers late authorisation (a bank may confirm a payment days after
//! the customer saw it fail), so a top-up whose webhooks never arrive still
//! completes.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub first: Duration,
    pub interval_max: Duration,
    pub horizon: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            first: Duration::from_secs(30),
            interval_max: Duration::from_secs(6 * 3600),
            horizon: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Schedule {
    /// How long after creation poll number `attempt` (0 = the first) is due;
    /// `None` once that is past the horizon.
    pub fn due_after(&self, attempt: u32) -> Option<Duration> {
        let mut at = self.first;
        let mut interval = self.first.max(Duration::from_secs(1));
        for _ in 0..attempt {
            at += interval;
            interval = (interval * 2).min(self.interval_max);
            if at > self.horizon {
                return None;
            }
        }
        (at <= self.horizon).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_stops_at_the_horizon() {
        let s = Schedule {
            first: Duration::from_secs(30),
            interval_max: Duration::from_secs(120),
            horizon: Duration::from_secs(600),
        };
        let due: Vec<u64> = (0..10)
            .map_while(|a| s.due_after(a).map(|d| d.as_secs()))
            .collect();
        assert_eq!(due, vec![30, 60, 120, 240, 360, 480, 600]);
        let real = Schedule::default();
        let n = (0..1000)
            .take_while(|a| real.due_after(*a).is_some())
            .count();
        // Seven days at six-hourly polls after a short ramp: about forty polls.
        assert!((25..60).contains(&n), "{n}");
    }
}
