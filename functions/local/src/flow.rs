//! Flow control of one subscription's deliveries: how many attempts may be in flight at once,
//! how fast new ones may start, and the back-off when the target struggles. The window grows by
//! one on each success answered within half the attempt timeout, up to the subscription's
//! `max_in_flight`; a timeout, a refused connection or a 429/503 halves it and pauses new
//! attempts for the target's `Retry-After`, or for a pause that doubles while the target keeps
//! struggling. So a slow target is sent what it can take, instead of more requests that time
//! out: a consumer that serves one request at a time answers the last of `n` queued requests
//! after `n` times its own time, and a window grown by its slow answers would time out again.

use std::time::{Duration, Instant};

use busway_core::subscription::DeliverySettings;

/// The longest `Retry-After` honoured; a longer one is read as this.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

#[derive(Debug)]
pub struct Flow {
    max: usize,
    window: usize,
    paused_until: Option<Instant>,
    next_pause: Duration,
    pause_base: Duration,
    pause_cap: Duration,
    /// Between two attempts' starts, from `invocation_rate_limit_per_second`.
    spacing: Option<Duration>,
    next_start: Option<Instant>,
    /// A success answered slower than this does not grow the window.
    grows_within: Duration,
}

impl Flow {
    /// `timeout` is an attempt's: half of it is the answer time that still grows the window.
    pub fn new(
        settings: &DeliverySettings,
        pause_base: Duration,
        pause_cap: Duration,
        timeout: Duration,
    ) -> Self {
        let max = usize::try_from(settings.max_in_flight.max(1)).unwrap_or(1);
        Self {
            max,
            window: max,
            grows_within: timeout / 2,
            paused_until: None,
            next_pause: pause_base,
            pause_base,
            pause_cap,
            spacing: settings
                .invocation_rate_limit_per_second
                .map(|rate| Duration::from_secs(1) / rate.max(1)),
            next_start: None,
        }
    }

    /// How many attempts may be in flight now.
    pub fn window(&self) -> usize {
        self.window
    }

    /// When the next attempt may start, if not now.
    pub fn wait_until(&self, now: Instant) -> Option<Instant> {
        [self.paused_until, self.next_start]
            .into_iter()
            .flatten()
            .filter(|&t| t > now)
            .max()
    }

    /// An attempt starts now.
    pub fn started(&mut self, now: Instant) {
        if let Some(spacing) = self.spacing {
            self.next_start = Some(self.next_start.map_or(now, |t| t.max(now)) + spacing);
        }
    }

    /// An attempt succeeded, answered `took` after it started.
    pub fn succeeded(&mut self, took: Duration) {
        if took <= self.grows_within {
            self.window = (self.window + 1).min(self.max);
        }
        self.next_pause = self.pause_base;
    }

    /// The target struggled. Attempts already in flight when it did fail alike: within a pause,
    /// only a longer `Retry-After` counts, so one bad moment shrinks the window once.
    pub fn struggled(&mut self, now: Instant, retry_after: Option<Duration>) {
        let asked = retry_after.map(|d| d.min(RETRY_AFTER_CAP));
        if self.paused_until.is_some_and(|t| t > now) {
            if let Some(asked) = asked {
                self.paused_until = self.paused_until.max(Some(now + asked));
            }
            return;
        }
        self.window = (self.window / 2).max(1);
        self.paused_until = Some(now + asked.unwrap_or(self.next_pause));
        self.next_pause = (self.next_pause * 2).min(self.pause_cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn settings(max_in_flight: u32, rate: Option<u32>) -> DeliverySettings {
        DeliverySettings {
            max_in_flight,
            invocation_rate_limit_per_second: rate,
        }
    }

    #[test]
    fn a_struggling_target_halves_the_window_and_pauses_then_recovers_one_by_one() {
        let base = Duration::from_millis(100);
        let mut flow = Flow::new(&settings(8, None), base, Duration::from_secs(1), TIMEOUT);
        let now = Instant::now();
        assert_eq!(flow.window(), 8);
        assert_eq!(flow.wait_until(now), None);

        flow.struggled(now, None);
        assert_eq!(flow.window(), 4);
        assert_eq!(flow.wait_until(now), Some(now + base));
        // Attempts in flight at the same moment do not shrink it again.
        flow.struggled(now, None);
        assert_eq!(flow.window(), 4);

        let later = now + base;
        flow.struggled(later, None);
        assert_eq!(flow.window(), 2);
        assert_eq!(
            flow.wait_until(later),
            Some(later + base * 2),
            "the pause doubles"
        );

        for expected in [3, 4, 5, 6, 7, 8, 8] {
            flow.succeeded(Duration::from_millis(5));
            assert_eq!(flow.window(), expected);
        }
        let again = later + Duration::from_secs(1);
        flow.struggled(again, None);
        assert_eq!(
            flow.wait_until(again),
            Some(again + base),
            "success resets the pause"
        );
    }

    /// A consumer serving one request at a time in 1.5 s: with 4 in flight the last would be
    /// answered after 6 s and time out. Halved to 2, the window grows on the 1.5 s answer only,
    /// to 3, whose answers (1.5, 3 and 4.5 s) all come within the timeout.
    #[test]
    fn answers_slower_than_half_the_timeout_do_not_grow_the_window() {
        let mut flow = Flow::new(
            &settings(4, None),
            Duration::from_millis(10),
            Duration::from_secs(1),
            TIMEOUT,
        );
        flow.struggled(Instant::now(), None);
        assert_eq!(flow.window(), 2);
        for (took, window) in [(1_500, 3), (3_000, 3), (4_500, 3), (1_500, 4)] {
            flow.succeeded(Duration::from_millis(took));
            assert_eq!(flow.window(), window, "after an answer in {took} ms");
        }
    }

    #[test]
    fn retry_after_sets_the_pause_within_a_cap() {
        let mut flow = Flow::new(
            &settings(4, None),
            Duration::from_millis(10),
            Duration::from_secs(1),
            TIMEOUT,
        );
        let now = Instant::now();
        flow.struggled(now, Some(Duration::from_secs(7)));
        assert_eq!(flow.wait_until(now), Some(now + Duration::from_secs(7)));
        flow.struggled(now, Some(Duration::from_secs(9)));
        assert_eq!(
            flow.wait_until(now),
            Some(now + Duration::from_secs(9)),
            "a longer ask extends it"
        );
        assert_eq!(flow.window(), 2, "but does not shrink the window twice");
        flow.struggled(
            now + Duration::from_secs(10),
            Some(Duration::from_secs(86_400)),
        );
        assert_eq!(
            flow.wait_until(now),
            Some(now + Duration::from_secs(10) + RETRY_AFTER_CAP)
        );
    }

    #[test]
    fn the_rate_limit_spaces_attempt_starts() {
        let mut flow = Flow::new(
            &settings(100, Some(4)),
            Duration::from_millis(10),
            Duration::from_secs(1),
            TIMEOUT,
        );
        let now = Instant::now();
        flow.started(now);
        assert_eq!(flow.wait_until(now), Some(now + Duration::from_millis(250)));
        flow.started(now);
        assert_eq!(flow.wait_until(now), Some(now + Duration::from_millis(500)));
        assert_eq!(flow.wait_until(now + Duration::from_secs(1)), None);
    }
}
