//! [`Config`]: the settings of declared values (set through
//! [`SecretsBuilder`](crate::SecretsBuilder)): those every cache shares, and the store's own
//! (load timeout, longest wait, `refresh_now` interval, spread).

use std::time::Duration;

use crate::error::Error;
use crate::freshness::settings::{at_most_an_hour, shown, Settings};
use crate::time::schedule;

/// Tuning of loading and refreshing declared values.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// What declared and on-demand values share (`timeout` is the refresh timeout).
    pub(crate) freshness: Settings,
    pub(crate) load_timeout: Duration,
    pub(crate) max_wait: Duration,
    pub(crate) refresh_now_interval: Duration,
    /// Fraction of the shortest TTL of a refresh over which its calls to scarce quotas spread.
    pub(crate) spread: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            freshness: Settings::default(),
            load_timeout: Duration::from_secs(8),
            max_wait: Duration::from_secs(5),
            refresh_now_interval: Duration::from_secs(5),
            spread: schedule::DEFAULT_SPREAD,
        }
    }
}

impl Config {
    /// Checks every setting; the first one out of range is the error.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        self.freshness.validate("refresh timeout")?;
        for (what, value) in [
            ("max wait", self.max_wait),
            ("load timeout", self.load_timeout),
            ("refresh_now interval", self.refresh_now_interval),
        ] {
            at_most_an_hour(what, value)?;
        }
        if self.load_timeout.is_zero() {
            return Err(Error::invalid_input(
                "load timeout",
                "0s",
                "must be more than zero",
            ));
        }
        if !(0.0..=schedule::MAX_SPREAD).contains(&self.spread) {
            return Err(Error::invalid_input(
                "refresh spread",
                shown(self.spread),
                format!(
                    "must be between 0.0 (no spreading) and {}: spreading may delay a value by at most that fraction of its TTL",
                    schedule::MAX_SPREAD
                ),
            ));
        }
        Ok(())
    }
}
