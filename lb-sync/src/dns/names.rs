//! Mesos-DNS's name mangling, so that the names clients already use keep resolving.
//!
//! A label is lower-cased, `.` and `_` become `-`, every other character outside `[a-z0-9-]`
//! is dropped, leading and trailing `-` are trimmed, and it is cut at 63 characters (RFC 1123).
//! An app's label is its path reversed and joined (Marathon named tasks
//! `PathId.toHostname`): `/prod/web/api` → `api-web-prod`.

use stride_core::PathId;

/// One DNS label from arbitrary text, RFC 1123 style.
pub fn label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        match c {
            'a'..='z' | '0'..='9' | '-' => out.push(c),
            '.' | '_' => out.push('-'),
            _ => {}
        }
    }
    let trimmed = out.trim_matches('-');
    let mut cut: String = trimmed.chars().take(63).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    cut
}

/// The label of an app: its path segments reversed, joined, mangled.
pub fn app_label(id: &PathId) -> String {
    let mut parts: Vec<&str> = id.segments().iter().map(String::as_str).collect();
    parts.reverse();
    label(&parts.join("."))
}

/// A domain as written in configuration (`mesos`, `Mesos.`), as a lower-case fully qualified
/// name with its trailing dot.
pub fn fqdn(domain: &str) -> String {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if d.is_empty() {
        ".".into()
    } else {
        format!("{d}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_mesos_dns() {
        assert_eq!(app_label(&PathId::parse("/prod/web/api")), "api-web-prod");
        assert_eq!(app_label(&PathId::parse("/web")), "web");
        assert_eq!(app_label(&PathId::parse("/g/web-1.v2")), "web-1-v2-g");
        assert_eq!(label("Agent_1.Example.COM"), "agent-1-example-com");
        assert_eq!(label("--a b!c--"), "abc");
        assert_eq!(label(&"x".repeat(80)).len(), 63);
        assert_eq!(label(&format!("{}-y", "x".repeat(62))), "x".repeat(62));
        assert_eq!(fqdn("Mesos."), "mesos.");
    }
}
