//! Marathon's timestamps: ISO-8601 UTC with exactly three fractional digits and a `Z`
//! (`2015-09-25T15:13:48.343Z`). They are also the versions of apps, groups and deployments.

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, UTC. Ordered, so versions compare as times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    pub fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses any ISO-8601 offset date-time, as Marathon's input does.
    pub fn parse(raw: &str) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(raw.trim())
            .map(|t| Self(t.timestamp_millis()))
            .map_err(|e| {
                format!(
                    "Invalid timestamp provided '{raw}'. Expecting ISO-8601 datetime string: {e}"
                )
            })
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        (self.0 - earlier.0) as f64 / 1000.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Utc.timestamp_millis_opt(self.0).single() {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => write!(f, "{}", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Timestamp::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_millisecond_precision() {
        let t = Timestamp::parse("2015-09-25T15:13:48.343Z").expect("valid");
        assert_eq!(t.to_string(), "2015-09-25T15:13:48.343Z");
        let offset = Timestamp::parse("2015-09-25T17:13:48.343+02:00").expect("valid");
        assert_eq!(offset, t);
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert!(Timestamp::parse("yesterday").is_err());
    }
}
