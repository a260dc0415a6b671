//! Slash-separated ids of apps and groups (Marathon's `PathId`).
//!
//! A path is a list of segments. Input may be relative (`web`, `../db`) and is made absolute
//! against a base: `/` for `/v2/apps`, the enclosing group inside group bodies. `.` is dropped and
//! `..` pops a segment. Output is always absolute (`/prod/web`).

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An absolute path id. The root is the empty list of segments and prints as `/`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId {
    segments: Vec<String>,
}

/// The pattern every segment must fully match (Marathon's `PathId` rule).
pub const SEGMENT_PATTERN: &str = r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])|(\.|\.\.)$";

/// Last segments that would collide with sub-resources of `/v2/apps/{id}`.
pub const RESERVED_LAST_SEGMENTS: [&str; 5] = ["restart", "tasks", "versions", ".", ".."];

fn segment_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // The pattern is a constant checked by the tests below.
    RE.get_or_init(|| {
        Regex::new(&format!(
            "^(?:{})$",
            &SEGMENT_PATTERN[1..SEGMENT_PATTERN.len() - 1]
        ))
        .unwrap_or_else(|e| panic!("segment pattern must compile: {e}"))
    })
}

impl PathId {
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses `raw` and makes it absolute against `base`. Never fails: validity of the segments
    /// is a separate question ([`PathId::segment_errors`]), so that a bad id is reported with
    /// Marathon's 422 body rather than refused while parsing.
    pub fn resolve(raw: &str, base: &PathId) -> Self {
        let absolute = raw.starts_with('/');
        let mut segments = if absolute {
            Vec::new()
        } else {
            base.segments.clone()
        };
        for part in raw.split('/').filter(|s| !s.is_empty()) {
            match part {
                "." => {}
                ".." => {
                    segments.pop();
                }
                other => segments.push(other.to_string()),
            }
        }
        Self { segments }
    }

    /// Parses an id against the root.
    pub fn parse(raw: &str) -> Self {
        Self::resolve(raw, &Self::root())
    }

    /// The raw segments of an input id, before `.` and `..` are applied, for validation.
    pub fn raw_segments(raw: &str) -> impl Iterator<Item = &str> {
        raw.split('/').filter(|s| !s.is_empty())
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    pub fn is_root(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn parent(&self) -> PathId {
        let mut segments = self.segments.clone();
        segments.pop();
        Self { segments }
    }

    pub fn name(&self) -> &str {
        self.segments.last().map(String::as_str).unwrap_or("")
    }

    pub fn child(&self, name: &str) -> PathId {
        let mut segments = self.segments.clone();
        segments.push(name.to_string());
        Self { segments }
    }

    /// True when `self` is `other` or lies below it.
    pub fn is_within(&self, other: &PathId) -> bool {
        self.segments.len() >= other.segments.len()
            && self.segments[..other.segments.len()] == other.segments[..]
    }

    /// Every ancestor group, from the root down to the parent.
    pub fn ancestors(&self) -> Vec<PathId> {
        (0..self.segments.len())
            .map(|n| Self {
                segments: self.segments[..n].to_vec(),
            })
            .collect()
    }

    /// Segments joined with `_`: the prefix of task ids (why `_` is not allowed in ids).
    pub fn safe_path(&self) -> String {
        self.segments.join("_")
    }

    /// Recovers a path from its safe form.
    pub fn from_safe_path(safe: &str) -> Self {
        Self {
            segments: safe
                .split('_')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Segments reversed and joined with `-`: the Mesos-DNS name of an app.
    pub fn dns_label(&self) -> String {
        let mut parts: Vec<&str> = self.segments.iter().map(String::as_str).collect();
        parts.reverse();
        parts.join("-")
    }

    /// Errors for each segment of a raw id that breaks Marathon's rules.
    pub fn segment_errors(raw: &str) -> Vec<String> {
        let mut errors = Vec::new();
        let re = segment_regex();
        if Self::raw_segments(raw).any(|s| !re.is_match(s)) {
            errors.push(format!(
                "must fully match regular expression '{SEGMENT_PATTERN}'"
            ));
        }
        if let Some(last) = Self::raw_segments(raw).last() {
            if RESERVED_LAST_SEGMENTS.contains(&last) {
                errors.push(
                    "must not end with any of the following reserved keywords: restart, tasks, versions, ., .."
                        .to_string(),
                );
            }
        }
        errors
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.segments.join("/"))
    }
}

impl Serialize for PathId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PathId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Ok(PathId::parse(&raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_ids_against_a_base() {
        let base = PathId::parse("/prod/web");
        assert_eq!(PathId::resolve("../db", &base).to_string(), "/prod/db");
        assert_eq!(PathId::resolve("api", &base).to_string(), "/prod/web/api");
        assert_eq!(PathId::resolve("/x//y/", &base).to_string(), "/x/y");
        assert_eq!(PathId::resolve("./z", &PathId::root()).to_string(), "/z");
        assert_eq!(PathId::root().to_string(), "/");
    }

    #[test]
    fn validates_segments() {
        assert!(PathId::segment_errors("/prod/web-1.v2").is_empty());
        assert!(!PathId::segment_errors("/Prod").is_empty());
        assert!(!PathId::segment_errors("/a_b").is_empty());
        assert!(!PathId::segment_errors("/a/-b").is_empty());
        assert!(!PathId::segment_errors("/a/restart").is_empty());
        assert!(PathId::segment_errors("../x").is_empty());
    }

    #[test]
    fn safe_path_and_dns_label() {
        let p = PathId::parse("/prod/web/api");
        assert_eq!(p.safe_path(), "prod_web_api");
        assert_eq!(PathId::from_safe_path("prod_web_api"), p);
        assert_eq!(p.dns_label(), "api-web-prod");
        assert!(p.is_within(&PathId::parse("/prod")));
        assert!(!PathId::parse("/prodx").is_within(&PathId::parse("/prod")));
    }
}
