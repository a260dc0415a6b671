//! Checking what a client presents in `Authorization`: HTTP Basic (`user:password`, as
//! Marathon's `--http_credentials`) or a bearer token (`<name>.<secret>`), against argon2 PHC
//! hashes.
//!
//! Argon2 is slow on purpose (tens of milliseconds), so:
//! - verification runs on the blocking pool, at most one per CPU at a time, never on an HTTP
//!   worker;
//! - a header that verified is remembered for a few minutes, keyed by a keyed SHA-256 of the
//!   header (the secret itself is never kept), so a client sending the same credentials on
//!   every request pays once;
//! - an unknown user name costs a verification too, so response times do not tell which names
//!   exist.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::Principal;

/// How long a verified header is trusted without verifying again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Verified headers remembered at most; beyond that the cache starts afresh.
const CACHE_CAPACITY: usize = 4096;

/// What an `Authorization` header carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presented {
    Basic { user: String, password: String },
    Bearer { name: String, secret: String },
}

/// Parses `Basic <base64(user:password)>` or `Bearer <name>.<secret>`; `None` for anything
/// else (which is then a 401).
pub fn parse_authorization(value: &str) -> Option<Presented> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        Some(Presented::Basic {
            user: user.to_string(),
            password: password.to_string(),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let (name, secret) = rest.rsplit_once('.')?;
        (!name.is_empty() && !secret.is_empty()).then(|| Presented::Bearer {
            name: name.to_string(),
            secret: secret.to_string(),
        })
    } else {
        None
    }
}

/// An argon2id PHC string for `secret` (OWASP's parameters, argon2's defaults).
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `secret` matches the PHC string (with the parameters the string names).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

/// A new bearer token for `name`: the token to hand out (`<name>.<secret>`) and the hash to
/// put in the security file.
pub fn new_token(name: &str) -> Result<(String, String), String> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_secret(&secret)?;
    Ok((format!("{name}.{secret}"), hash))
}

/// A hash to verify against when the user is unknown, so that answering takes as long.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_secret("stride-decoy").unwrap_or_default())
}

/// One verifiable account: its hash and who it is once verified.
#[derive(Clone, Debug)]
pub struct Account {
    pub hash: String,
    pub principal: Arc<Principal>,
}

/// A header that verified: who it proved, and since when.
type Verified = (Arc<Principal>, Instant);

/// The users and tokens of the security file, with the cache of verified headers.
pub struct Verifier {
    users: HashMap<String, Account>,
    tokens: HashMap<String, Account>,
    cache: parking_lot::Mutex<HashMap<[u8; 32], Verified>>,
    /// Keys the cache's hashes, so they are worthless outside this process.
    cache_key: [u8; 32],
    /// Argon2 runs at most this many at once.
    verifying: tokio::sync::Semaphore,
}

impl Verifier {
    pub fn new(users: HashMap<String, Account>, tokens: HashMap<String, Account>) -> Self {
        let mut cache_key = [0u8; 32];
        rand::rng().fill_bytes(&mut cache_key);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            users,
            tokens,
            cache: parking_lot::Mutex::new(HashMap::new()),
            cache_key,
            verifying: tokio::sync::Semaphore::new(cpus),
        }
    }

    fn cache_slot(&self, header: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(header.as_bytes());
        h.finalize().into()
    }

    /// The principal the header proves, or `None`.
    pub async fn verify(&self, header: &str) -> Option<Arc<Principal>> {
        let slot = self.cache_slot(header);
        if let Some((p, at)) = self.cache.lock().get(&slot) {
            if at.elapsed() < CACHE_TTL {
                return Some(p.clone());
            }
        }
        let presented = parse_authorization(header)?;
        let (secret, account) = match presented {
            Presented::Basic { user, password } => (password, self.users.get(&user).cloned()),
            Presented::Bearer { name, secret } => (secret, self.tokens.get(&name).cloned()),
        };
        let hash = account
            .as_ref()
            .map_or_else(|| decoy_hash().to_string(), |a| a.hash.clone());
        let _permit = self.verifying.acquire().await.ok()?;
        let matched = tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
            .await
            .unwrap_or(false);
        let principal = account.filter(|_| matched)?.principal;
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(slot, (principal.clone(), Instant::now()));
        Some(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::policy::Grants;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    #[test]
    fn headers_parse() {
        assert_eq!(
            parse_authorization(&basic("alice", "pa:ss")),
            Some(Presented::Basic {
                user: "alice".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            parse_authorization("Bearer ci.team-a.s3cr3t"),
            Some(Presented::Bearer {
                name: "ci.team-a".into(),
                secret: "s3cr3t".into()
            })
        );
        for bad in [
            "",
            "Basic",
            "Basic !!!",
            "Bearer nodot",
            "Digest x",
            "Bearer .x",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn secrets_verify_against_their_hash_only() {
        let hash = hash_secret("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_secret("s3cret", &hash));
        assert!(!verify_secret("S3cret", &hash));
        assert!(!verify_secret("s3cret", "not a hash"));

        let (token, token_hash) = new_token("ci").expect("token");
        let principal = |name: &str| Arc::new(Principal::new(name, Grants::default()));
        let v = Verifier::new(
            [(
                "alice".to_string(),
                Account {
                    hash,
                    principal: principal("alice"),
                },
            )]
            .into(),
            [(
                "ci".to_string(),
                Account {
                    hash: token_hash,
                    principal: principal("ci"),
                },
            )]
            .into(),
        );
        let who = |h: String| {
            let v = &v;
            async move { v.verify(&h).await.map(|p| p.name.clone()) }
        };
        assert_eq!(
            who(basic("alice", "s3cret")).await.as_deref(),
            Some("alice")
        );
        // Cached the second time; still the same answer.
        assert_eq!(
            who(basic("alice", "s3cret")).await.as_deref(),
            Some("alice")
        );
        assert_eq!(who(basic("alice", "wrong")).await, None);
        assert_eq!(who(basic("mallory", "s3cret")).await, None);
        assert_eq!(who(format!("Bearer {token}")).await.as_deref(), Some("ci"));
        assert_eq!(who("Bearer ci.forged".into()).await, None);
    }
}
