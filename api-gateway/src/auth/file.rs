//! The security file given with `--auth-config` (TOML, or JSON when the name ends in `.json`):
//! users and tokens with their argon2 hashes, roles as path-prefix grants, an optional external
//! authoriser, and admission webhooks. `docs/security.md` is its reference; `examples/auth.toml`
//! a full example.
//!
//! Loading checks everything a typo could break — unknown keys, unknown roles and actions,
//! hashes that are not argon2 PHC strings, prefixes that are not valid paths — so a gateway
//! never starts with a policy other than the one written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use argon2::password_hash::PasswordHash;
use serde::Deserialize;
use stride_core::path::RESERVED_LAST_SEGMENTS;
use stride_core::PathId;

use super::policy::{Action, Grants, SystemAction};
use crate::config::duration_str;

/// Marathon's default realm (`--http_realm`).
pub const DEFAULT_REALM: &str = "Mesosphere";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub users: Vec<UserEntry>,
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleEntry>,
    #[serde(default)]
    pub admission: AdmissionSection,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// The realm of `WWW-Authenticate: Basic realm="…"`.
    pub realm: String,
    /// Delegates authentication and authorisation of every request to this URL.
    pub external_url: Option<String>,
    /// Deadline of one call to `external_url`.
    #[serde(with = "duration_str")]
    pub external_timeout: Duration,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            realm: DEFAULT_REALM.to_string(),
            external_url: None,
            external_timeout: Duration::from_secs(2),
        }
    }
}

/// A person or program that logs in with HTTP Basic.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    /// Argon2 PHC string (`stride-api-gateway hash-password`).
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A bearer token: presented as `Authorization: Bearer <name>.<secret>`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    /// Argon2 PHC string of the secret part (`stride-api-gateway new-token`).
    pub token_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEntry {
    /// System actions: `view`, `update`, `abdicate`, or `*`.
    #[serde(default)]
    pub system: Vec<String>,
    /// Actions on apps and groups below path prefixes.
    #[serde(default)]
    pub paths: Vec<PathGrant>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathGrant {
    pub prefix: String,
    /// `view`, `create`, `update`, `delete`, `kill`, or `*`.
    pub actions: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSection {
    #[serde(default)]
    pub webhooks: Vec<WebhookEntry>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    pub url: String,
    #[serde(default = "default_webhook_timeout", with = "duration_str")]
    pub timeout: Duration,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl AuthFile {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| AuthFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let invalid = |message: String| AuthFileError::Invalid {
            path: shown.clone(),
            message,
        };
        let file: AuthFile = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| invalid(e.to_string()))?
        };
        file.check().map_err(invalid)?;
        Ok(file)
    }

    /// Everything serde cannot check.
    pub fn check(&self) -> Result<(), String> {
        let roles = self.compiled_roles()?;
        let mut names = BTreeSet::new();
        for u in &self.users {
            if u.name.is_empty() || u.name.contains(':') {
                return Err(format!(
                    "user {:?}: a name must be non-empty and hold no ':'",
                    u.name
                ));
            }
            if !names.insert(u.name.as_str()) {
                return Err(format!("user {:?} is listed twice", u.name));
            }
            check_hash(&u.password_hash).map_err(|e| format!("user {:?}: {e}", u.name))?;
            check_roles(&u.roles, &roles).map_err(|e| format!("user {:?}: {e}", u.name))?;
        }
        let mut tokens = BTreeSet::new();
        for t in &self.tokens {
            if t.name.is_empty() || t.name.contains(['.', ' ']) {
                return Err(format!(
                    "token {:?}: a name must be non-empty and hold no '.' or space",
                    t.name
                ));
            }
            if !tokens.insert(t.name.as_str()) {
                return Err(format!("token {:?} is listed twice", t.name));
            }
            check_hash(&t.token_hash).map_err(|e| format!("token {:?}: {e}", t.name))?;
            check_roles(&t.roles, &roles).map_err(|e| format!("token {:?}: {e}", t.name))?;
        }
        if let Some(url) = &self.auth.external_url {
            check_url(url).map_err(|e| format!("auth.external_url: {e}"))?;
            if !self.users.is_empty() || !self.tokens.is_empty() || !self.roles.is_empty() {
                return Err(
                    "auth.external_url decides every request; users, tokens and roles \
                     would be ignored, so remove them"
                        .into(),
                );
            }
        } else if self.users.is_empty() && self.tokens.is_empty() {
            return Err("no users, no tokens and no auth.external_url: nobody could log in".into());
        }
        for (i, w) in self.admission.webhooks.iter().enumerate() {
            check_url(&w.url).map_err(|e| format!("admission.webhooks[{i}].url: {e}"))?;
        }
        Ok(())
    }

    /// Each role's grants.
    pub fn compiled_roles(&self) -> Result<BTreeMap<String, Grants>, String> {
        let mut out = BTreeMap::new();
        for (name, role) in &self.roles {
            let mut g = Grants::default();
            for s in &role.system {
                match s.as_str() {
                    "*" => SystemAction::ALL.into_iter().for_each(|a| g.grant_system(a)),
                    other => g.grant_system(system_action(other).ok_or_else(|| {
                        format!(
                            "role {name:?}: unknown system action {other:?} (view, update, abdicate, *)"
                        )
                    })?),
                }
            }
            for grant in &role.paths {
                let prefix = prefix(&grant.prefix).map_err(|e| format!("role {name:?}: {e}"))?;
                if grant.actions.is_empty() {
                    return Err(format!(
                        "role {name:?}: prefix {} grants no action",
                        grant.prefix
                    ));
                }
                for a in &grant.actions {
                    let actions: Vec<Action> = match a.as_str() {
                        "*" => Action::ALL.to_vec(),
                        other => vec![path_action(other).ok_or_else(|| {
                            format!(
                                "role {name:?}: unknown action {other:?} (view, create, update, delete, kill, *)"
                            )
                        })?],
                    };
                    for action in actions {
                        g.grant(action, prefix.clone());
                    }
                }
            }
            out.insert(name.clone(), g);
        }
        Ok(out)
    }
}

fn path_action(name: &str) -> Option<Action> {
    Action::ALL.into_iter().find(|a| a.name() == name)
}

fn system_action(name: &str) -> Option<SystemAction> {
    SystemAction::ALL.into_iter().find(|a| a.name() == name)
}

/// An absolute prefix whose segments are valid ids (`/` is the whole tree).
fn prefix(raw: &str) -> Result<PathId, String> {
    if !raw.starts_with('/') {
        return Err(format!("prefix {raw:?} must start with '/'"));
    }
    // A reserved last segment (`tasks`, …) is an error for an app id, not for a prefix.
    let bad_segment = |s: &str| {
        matches!(s, "." | "..")
            || (!PathId::segment_errors(s).is_empty() && !RESERVED_LAST_SEGMENTS.contains(&s))
    };
    if PathId::raw_segments(raw).any(bad_segment) {
        return Err(format!("prefix {raw:?} is not a valid path"));
    }
    Ok(PathId::parse(raw))
}

fn check_hash(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| format!("not a PHC hash string: {e}"))?;
    if !hash.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "hash algorithm {} is not argon2 (use `stride-api-gateway hash-password`)",
            hash.algorithm
        ));
    }
    Ok(())
}

fn check_roles(names: &[String], roles: &BTreeMap<String, Grants>) -> Result<(), String> {
    match names.iter().find(|r| !roles.contains_key(r.as_str())) {
        Some(r) => Err(format!("unknown role {r:?}")),
        None => Ok(()),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(format!("{url:?} is not an http:// or https:// URL")),
        Err(e) => Err(format!("{url:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q8G1n6l6xq2fV4pQ3o9QpN0l8B1q4s3K3cXg9mXc5ZQ";

    fn parse(text: &str) -> Result<AuthFile, String> {
        let f: AuthFile = toml::from_str(text).map_err(|e| e.to_string())?;
        f.check()?;
        Ok(f)
    }

    #[test]
    fn a_full_file_parses_and_compiles() {
        let f = parse(&format!(
            r#"
            [auth]
            realm = "Stride"
            [[users]]
            name = "admin"
            password_hash = "{HASH}"
            roles = ["admin"]
            [[tokens]]
            name = "ci"
            token_hash = "{HASH}"
            roles = ["team-a"]
            [roles.admin]
            system = ["*"]
            paths = [{{ prefix = "/", actions = ["*"] }}]
            [roles.team-a]
            paths = [{{ prefix = "/team-a", actions = ["view", "update"] }}]
            [[admission.webhooks]]
            url = "http://policy:8081/admit"
            timeout = "1s"
            "#
        ))
        .expect("valid");
        assert_eq!(f.auth.realm, "Stride");
        assert_eq!(f.admission.webhooks[0].timeout, Duration::from_secs(1));
        let roles = f.compiled_roles().expect("roles");
        assert!(roles["admin"].allows_system(SystemAction::Abdicate));
        assert!(roles["team-a"].allows(Action::Update, &PathId::parse("/team-a/x")));
        assert!(!roles["team-a"].allows(Action::Delete, &PathId::parse("/team-a/x")));
    }

    #[test]
    fn mistakes_are_refused_with_a_reason() {
        let user = |roles: &str, hash: &str| {
            format!("[[users]]\nname = \"u\"\npassword_hash = \"{hash}\"\nroles = [{roles}]\n")
        };
        let bad = [
            (user("\"nope\"", HASH), "unknown role"),
            (user("", "plaintext"), "not a PHC hash"),
            (
                user(
                    "",
                    "$pbkdf2-sha256$i=1000$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2g",
                ),
                "is not argon2",
            ),
            (
                format!(
                    "{}[roles.r]\npaths = [{{ prefix = \"team\", actions = [\"view\"] }}]",
                    user("\"r\"", HASH)
                ),
                "must start with '/'",
            ),
            (
                format!(
                    "{}[roles.r]\npaths = [{{ prefix = \"/t\", actions = [\"launch\"] }}]",
                    user("\"r\"", HASH)
                ),
                "unknown action",
            ),
            (
                format!("{}[roles.r]\nsystem = [\"root\"]", user("\"r\"", HASH)),
                "unknown system action",
            ),
            (String::new(), "nobody could log in"),
            (
                format!("{}[auth]\nexternal_url = \"http://authz\"", user("", HASH)),
                "would be ignored",
            ),
            (
                format!("{}[auth]\nsurprise = 1", user("", HASH)),
                "unknown field",
            ),
        ];
        for (text, why) in bad {
            let e = parse(&text).expect_err(&text);
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
