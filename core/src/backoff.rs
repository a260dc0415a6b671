//! Launch backoff (reference §8.1): after a task fails, the next launch of the same app
//! configuration waits `backoffSeconds`, then that times `backoffFactor` after each further
//! failure, up to `maxLaunchDelaySeconds`.

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::time::Timestamp;

/// The backoff of one app configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// `lastConfigChangeAt` of the configuration this delay belongs to.
    pub config_version: Timestamp,
    pub delay_ms: i64,
    /// From when the delay counts.
    pub reference: Timestamp,
}

impl Backoff {
    pub fn deadline(&self) -> Timestamp {
        self.reference.plus_millis(self.delay_ms)
    }

    /// Seconds left before launches may go ahead; 0 when overdue.
    pub fn time_left_seconds(&self, now: Timestamp) -> f64 {
        (self.deadline().0 - now.0).max(0) as f64 / 1000.0
    }
}

/// The delay after one more failure.
pub fn on_failure(current: Option<&Backoff>, app: &App, now: Timestamp) -> Backoff {
    let max = app.max_launch_delay_seconds.max(0) * 1000;
    let config_version = app.config_version();
    let delay_ms = match current {
        Some(b) if b.config_version == config_version => {
            ((b.delay_ms as f64 * app.backoff_factor) as i64).min(max)
        }
        _ => (app.backoff_seconds.max(0) * 1000).min(max),
    };
    Backoff {
        config_version,
        delay_ms,
        reference: now,
    }
}

/// True while launches of `app`'s current configuration must wait.
pub fn is_delayed(backoff: Option<&Backoff>, app: &App, now: Timestamp) -> bool {
    backoff.is_some_and(|b| b.config_version == app.config_version() && b.deadline() > now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_the_factor_up_to_the_cap() {
        let mut app = App::new("/a");
        app.max_launch_delay_seconds = 2;
        let b1 = on_failure(None, &app, Timestamp(0));
        assert_eq!(b1.delay_ms, 1000);
        let b2 = on_failure(Some(&b1), &app, Timestamp(0));
        assert_eq!(b2.delay_ms, 1150);
        let mut b = b2;
        for _ in 0..20 {
            b = on_failure(Some(&b), &app, Timestamp(0));
        }
        assert_eq!(b.delay_ms, 2000);
        assert!(is_delayed(Some(&b), &app, Timestamp(1999)));
        assert!(!is_delayed(Some(&b), &app, Timestamp(2000)));
    }
}
