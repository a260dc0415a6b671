//! The HAProxy configuration as a pure function of the services: marathon-lb's layout and
//! names, modern HAProxy (2.4+) syntax, and room to change membership without a reload.
//!
//! Layout, in marathon-lb's order: `global`/`defaults`/`listen stats`, userlists, the shared
//! `marathon_http_in` (vhost ACLs, sorted by `HAPROXY_{n}_BACKEND_WEIGHT`),
//! `marathon_http_appid_in` (`X-Marathon-App-Id`), `marathon_https_in` (SNI), then one
//! `frontend <backend>` and one `backend <backend>` per service, where `<backend>` is
//! `<app id, / → _>_<service port>`. Servers are named `<host>_<ip>_<port>` (non-alphanumerics
//! → `_`, the host left out when it is the IP) with marathon-lb's stable `id` (sha256 of the
//! name mod 32767, re-hashed on collision) and, for sticky backends, its cookie (the first ten
//! hex digits of the name's sha1).
//!
//! Differences from marathon-lb, each on purpose:
//! - Every backend ends with spare slots (`server stride_spare_<k> 0.0.0.0:0 … disabled`),
//!   `spare_slots` at least, capacity rounded up to `slot_block` and kept while it fits, so that
//!   a new task is placed in a slot through the runtime API and scaling needs no reload.
//! - A service with no serving task keeps its frontend and backend (answering 503 rather than
//!   refusing connections, and scaling from zero needs no reload).
//! - Directives removed from HAProxy 2.1 (`rspadd`, `reqirep`, `rspirep`) are written as
//!   `http-response set-header`, `http-request replace-path` and `http-response replace-header`.
//! - `marathon_https_in` is left out when there is no certificate to bind it with.
//! - An `HTTPS` (or `MESOS_HTTPS`) health check on an HTTP-mode port is checked by connecting,
//!   not with `option httpchk`: marathon-lb's plain-text check to a TLS port fails every server.
//! - The shared frontends list their lines grouped by kind (ACLs, `http-request`, `redirect`,
//!   `use_backend`), each kind in marathon-lb's order; HAProxy evaluates them in that order
//!   wherever they stand, so the routing is the same.
//!
//! [`Rendered::structure`] hashes everything except the server lines (plus each backend's
//! capacity and server options): when only it is unchanged, the running HAProxy can be brought
//! up to date without a reload.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::services::{services, Mode, Service, ServiceOptions};
use crate::snapshot::Snapshot;

/// Everything rendering depends on besides the state.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    pub services: ServiceOptions,
    pub bind_http_https: bool,
    pub http_bind: String,
    pub https_bind: String,
    pub appid_bind: String,
    pub ssl_certs: Vec<String>,
    pub admin_socket: String,
    pub hard_stop_after: Duration,
    pub stats_bind: Option<String>,
    pub spare_slots: usize,
    pub slot_block: usize,
    pub health_checks: bool,
    pub maxconn: Option<u32>,
    pub extra_global: Vec<String>,
    pub extra_defaults: Vec<String>,
}

impl RenderOptions {
    pub fn from_config(c: &crate::config::HaproxyConfig) -> Self {
        Self {
            services: ServiceOptions {
                groups: c.groups.clone(),
                default_group: c.default_group.clone(),
                strict_mode: c.strict_mode,
                default_bind_addr: c.default_bind_addr.clone(),
                skip_app_ids: c.skip_app_ids.clone(),
            },
            bind_http_https: c.bind_http_https,
            http_bind: c.http_bind.clone(),
            https_bind: c.https_bind.clone(),
            appid_bind: c.appid_bind.clone(),
            ssl_certs: c.ssl_certs.clone(),
            admin_socket: c.admin_socket.display().to_string(),
            hard_stop_after: c.hard_stop_after,
            stats_bind: c.stats_bind.clone(),
            spare_slots: c.spare_slots,
            slot_block: c.slot_block.max(1),
            health_checks: c.health_checks,
            maxconn: c.maxconn,
            extra_global: c.extra_global.clone(),
            extra_defaults: c.extra_defaults.clone(),
        }
    }
}

/// A server as the runtime API must see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPlan {
    /// The name in the file (marathon-lb's); at runtime the server may sit in another slot.
    pub name: String,
    pub ip: IpAddr,
    pub port: u32,
    /// Draining (blue/green): present, in maintenance.
    pub disabled: bool,
    pub check_port: Option<u32>,
}

/// One backend's intended servers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendPlan {
    pub name: String,
    pub app_id: String,
    /// Server lines in the file: servers plus spare slots.
    pub capacity: usize,
    /// Servers carry `check` (health can be forced up when a slot is filled).
    pub checks: bool,
    pub servers: Vec<ServerPlan>,
}

/// A rendered configuration.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub text: String,
    pub backends: Vec<BackendPlan>,
    /// Hash of everything a runtime update cannot change.
    pub structure: u64,
}

impl Rendered {
    pub fn capacities(&self) -> HashMap<String, usize> {
        self.backends
            .iter()
            .map(|b| (b.name.clone(), b.capacity))
            .collect()
    }

    pub fn server_count(&self) -> usize {
        self.backends.iter().map(|b| b.servers.len()).sum()
    }
}

/// Renders the services of `snapshot`, leaving out the apps in `exclude`.
pub fn render(
    snapshot: &Snapshot,
    opts: &RenderOptions,
    prev_capacity: &HashMap<String, usize>,
    exclude: &HashSet<String>,
) -> Rendered {
    let mut list = services(snapshot, &opts.services);
    if !exclude.is_empty() {
        list.retain(|s| !exclude.contains(&s.app_id));
    }
    render_services(&list, opts, prev_capacity)
}

/// The server name marathon-lb gives a task endpoint.
pub fn server_name(host: &str, ip: IpAddr, port: u32) -> String {
    let mut ipbuf = String::new();
    push_ip(&mut ipbuf, ip);
    let mut out = String::new();
    write_server_name(&mut out, host, &ipbuf, port);
    out
}

/// `<host>_<ip>_<port>` (the host left out when it is the IP), `[^a-zA-Z0-9-]` → `_`.
fn write_server_name(out: &mut String, host: &str, ip: &str, port: u32) {
    let push_clean = |out: &mut String, s: &str| {
        out.extend(s.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        }))
    };
    if host != ip {
        push_clean(out, host);
        out.push('_');
    }
    push_clean(out, ip);
    out.push('_');
    push_u32(out, port);
}

/// Appends `n` in decimal.
fn push_u32(out: &mut String, mut n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for b in &buf[i..] {
        out.push(char::from(*b));
    }
}

/// Appends an address as `Display` writes it (IPv4 by hand: the common case).
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u32(out, u32::from(*o));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `[^a-zA-Z0-9-]` → `_`.
pub fn clean(raw: &str) -> String {
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// marathon-lb's stable server id: sha256 of the name mod 32767, never 0, re-hashed with the
/// digest appended on a collision within the backend.
pub fn server_id(name: &str, taken: &mut HashSet<u32>) -> u32 {
    // sha256 dominates large renders; the first-round id of a name never changes.
    thread_local! {
        static FIRST: std::cell::RefCell<HashMap<String, u32>> = std::cell::RefCell::new(HashMap::new());
    }
    let first = FIRST.with(|memo| {
        let mut memo = memo.borrow_mut();
        if let Some(id) = memo.get(name) {
            return *id;
        }
        if memo.len() > 200_000 {
            memo.clear();
        }
        let id = id_of(name);
        memo.insert(name.to_string(), id);
        id
    });
    if first != 0 && taken.insert(first) {
        return first;
    }
    let mut current = name.to_string();
    loop {
        let digest = Sha256::digest(current.as_bytes());
        current = format!("{current} {}", hex(&digest));
        let id = id_of(&current);
        if id != 0 && taken.insert(id) {
            return id;
        }
    }
}

/// sha256 of `name`, as a big number, mod 32767.
fn id_of(name: &str) -> u32 {
    Sha256::digest(name.as_bytes())
        .iter()
        .fold(0u32, |acc, b| (acc * 256 + u32::from(*b)) % 32767)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The sticky cookie value of a server: the first ten hex digits of the sha1 of its name.
pub fn cookie(name: &str) -> String {
    let digest = Sha1::digest(name.as_bytes());
    hex(&digest[..5])
}

/// Server lines for `n` servers: at least `n + spare`, a multiple of `block`, and the previous
/// capacity kept while it has room and is not more than four times what is needed, so that
/// scaling back and forth never reloads.
pub fn capacity(n: usize, prev: Option<usize>, spare: usize, block: usize) -> usize {
    let needed = n + spare.max(1);
    let rounded = needed.div_ceil(block) * block;
    match prev {
        Some(p) if p >= needed && p <= rounded * 4 => p,
        _ => rounded,
    }
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.replace("{{", "\u{1}").replace("}}", "\u{2}");
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out.replace('\u{1}', "{").replace('\u{2}', "}")
}

fn duration(d: Duration) -> String {
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

fn head(out: &mut String, opts: &RenderOptions) {
    out.push_str("global\n");
    if let Some(m) = opts.maxconn {
        let _ = writeln!(out, "  maxconn {m}");
    }
    let _ = write!(
        out,
        "  stats socket {} mode 600 level admin expose-fd listeners\n  stats timeout 2m\n  hard-stop-after {}\n  spread-checks 5\n  tune.ssl.default-dh-param 2048\n  ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets\n  ssl-default-server-options ssl-min-ver TLSv1.2 no-tls-tickets\n",
        opts.admin_socket,
        duration(opts.hard_stop_after),
    );
    for l in &opts.extra_global {
        let _ = writeln!(out, "  {}", l.trim());
    }
    out.push_str(
        "defaults\n  log global\n  retries 3\n  backlog 10000\n  maxconn 10000\n  timeout connect 3s\n  timeout client 30s\n  timeout server 30s\n  timeout tunnel 3600s\n  timeout http-keep-alive 1s\n  timeout http-request 15s\n  timeout queue 30s\n  timeout tarpit 60s\n  option dontlognull\n  option http-server-close\n  option redispatch\n",
    );
    for l in &opts.extra_defaults {
        let _ = writeln!(out, "  {}", l.trim());
    }
    if let Some(bind) = &opts.stats_bind {
        let _ = write!(
            out,
            "\nlisten stats\n  bind {bind}\n  mode http\n  stats enable\n  http-request use-service prometheus-exporter if {{ path /metrics }}\n  monitor-uri /_haproxy_health_check\n"
        );
    }
}

/// The vhost rules of one service for `marathon_http_in` and `marathon_https_in`.
fn vhost_rules(s: &Service, backend: &str) -> (String, String) {
    let mut http = String::new();
    let mut https = String::new();
    let app = s.app_id.trim_start_matches('/').replace('/', "_");
    let acl = format!("{}_{app}", clean(&s.vhosts[0]));
    let path = s.path.as_deref();
    let auth = s.auth.as_ref();
    if s.vhosts.len() == 1 {
        let host = &s.vhosts[0];
        let _ = writeln!(http, "  acl host_{acl} hdr(host) -i {host}");
        if let Some(p) = path {
            if auth.is_some() && !s.redirect_to_https {
                let _ = writeln!(http, "  acl auth_{acl} http_auth(user_{backend})");
            }
            let _ = writeln!(http, "  acl path_{backend} path_beg {p}");
        } else if auth.is_some() && !s.redirect_to_https {
            let _ = writeln!(http, "  acl auth_{acl} http_auth(user_{backend})");
        }
        let cond = match path {
            Some(_) => format!("host_{acl} path_{backend}"),
            None => format!("host_{acl}"),
        };
        if s.redirect_to_https {
            let _ = writeln!(
                http,
                "  redirect scheme https code 301 if !{{ ssl_fc }} {cond}"
            );
        } else if let Some(a) = auth {
            let _ = writeln!(
                http,
                "  http-request auth realm \"{}\" if {cond} !auth_{acl}",
                a.realm
            );
        }
        let _ = writeln!(http, "  use_backend {backend} if {cond}");
        // HTTPS (SNI).
        if let Some(p) = path {
            let _ = writeln!(https, "  acl path_{backend} path_beg {p}");
        }
        let sni = match path {
            Some(_) => format!("{{ ssl_fc_sni {host} }} path_{backend}"),
            None => format!("{{ ssl_fc_sni {host} }}"),
        };
        if let Some(a) = auth {
            let _ = writeln!(https, "  acl auth_{acl} http_auth(user_{backend})");
            let _ = writeln!(
                https,
                "  http-request auth realm \"{}\" if {sni} !auth_{acl}",
                a.realm
            );
        }
        let _ = writeln!(https, "  use_backend {backend} if {sni}");
    } else {
        if let Some(p) = path {
            let _ = writeln!(http, "  acl path_{backend} path_beg {p}");
            let _ = writeln!(https, "  acl path_{backend} path_beg {p}");
            if auth.is_some() {
                let _ = writeln!(http, "  acl auth_{acl} http_auth(user_{backend})");
            }
        }
        for host in &s.vhosts {
            let _ = writeln!(http, "  acl host_{acl} hdr(host) -i {host}");
            let sni = match path {
                Some(_) => format!("{{ ssl_fc_sni {host} }} path_{backend}"),
                None => format!("{{ ssl_fc_sni {host} }}"),
            };
            if let Some(a) = auth {
                let _ = writeln!(https, "  acl auth_{acl} http_auth(user_{backend})");
                let _ = writeln!(
                    https,
                    "  http-request auth realm \"{}\" if {sni} !auth_{acl}",
                    a.realm
                );
            }
            let _ = writeln!(https, "  use_backend {backend} if {sni}");
        }
        let cond = match path {
            Some(_) => format!("host_{acl} path_{backend}"),
            None => format!("host_{acl}"),
        };
        if s.redirect_to_https {
            let _ = writeln!(
                http,
                "  redirect scheme https code 301 if !{{ ssl_fc }} {cond}"
            );
        } else {
            if let Some(a) = auth {
                if path.is_none() {
                    let _ = writeln!(http, "  acl auth_{acl} http_auth(user_{backend})");
                }
                let _ = writeln!(
                    http,
                    "  http-request auth realm \"{}\" if {cond} !auth_{acl}",
                    a.realm
                );
            }
            let _ = writeln!(http, "  use_backend {backend} if {cond}");
        }
    }
    (http, https)
}

/// The `check …` options of a service's servers (without a per-server port).
fn check_options(s: &Service, opts: &RenderOptions) -> Option<(String, Option<String>)> {
    if !opts.health_checks {
        return None;
    }
    let hc = s.health_check.as_ref()?;
    let server = format!(
        " check inter {}s fall {}",
        hc.interval_seconds,
        hc.max_consecutive_failures + 1
    );
    // HTTPS checks are connect checks: HAProxy's `httpchk` would speak plain HTTP to a TLS port.
    let tcp_style = s.mode == Mode::Tcp
        || matches!(
            hc.protocol.as_str(),
            "TCP" | "MESOS_TCP" | "HTTPS" | "MESOS_HTTPS"
        );
    let backend = (!tcp_style).then(|| {
        format!(
            "  option  httpchk GET {}\n  timeout check {}s\n",
            hc.path, hc.timeout_seconds
        )
    });
    Some((server, backend))
}

/// Writes the rules of a shared frontend, heaviest `HAPROXY_{n}_BACKEND_WEIGHT` first, grouped
/// the way HAProxy evaluates them anyway (ACLs, `http-request`, `redirect`, `use_backend`), so
/// that the order in the file is the order of evaluation and HAProxy has nothing to warn about.
fn push_rules(out: &mut String, rules: &mut [(i64, String)]) {
    rules.sort_by_key(|(w, _)| std::cmp::Reverse(*w));
    let kinds = ["  acl ", "  http-request ", "  redirect ", "  use_backend "];
    for kind in kinds {
        for (_, block) in rules.iter() {
            for line in block.lines().filter(|l| l.starts_with(kind)) {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (_, block) in rules.iter() {
        for line in block
            .lines()
            .filter(|l| !kinds.iter().any(|k| l.starts_with(k)))
        {
            out.push_str(line);
            out.push('\n');
        }
    }
}

/// Placeholder values of a service's template overrides.
fn template(s: &Service, name: &str) -> Option<String> {
    let t = s.templates.get(name)?;
    let port = s.service_port.to_string();
    let ssl = s
        .ssl_cert
        .as_ref()
        .map(|c| format!(" ssl crt {c}"))
        .unwrap_or_default();
    let bind_opts = s
        .bind_options
        .as_ref()
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    let vars: [(&str, &str); 7] = [
        ("backend", &s.backend),
        ("bindAddr", &s.bind_addr),
        ("servicePort", &port),
        ("mode", s.mode.as_str()),
        ("sslCert", &ssl),
        ("bindOptions", &bind_opts),
        ("balance", &s.balance),
    ];
    Some(fill(t, &vars))
}

/// Renders a list of services (sorted by app id and port).
///
/// Written in passes straight into one string (no intermediate buffers to copy): the head,
/// userlists and shared frontends, the per-service frontends, then the backends, whose
/// server lines are the only text left out of [`Rendered::structure`].
pub fn render_services(
    list: &[Service],
    opts: &RenderOptions,
    prev_capacity: &HashMap<String, usize>,
) -> Rendered {
    let estimate: usize = list
        .iter()
        .map(|s| 420 + 110 * s.servers.len() + 70 * (opts.spare_slots + opts.slot_block))
        .sum();
    let mut out = String::with_capacity(8192 + estimate);
    head(&mut out, opts);

    // Userlists and the shared frontends.
    let mut http_rules: Vec<(i64, String)> = Vec::new();
    let mut https_rules: Vec<(i64, String)> = Vec::new();
    let mut appid = String::new();
    let mut appid_seen: HashSet<&str> = HashSet::new();
    let mut https_certs: Vec<String> = opts.ssl_certs.clone();
    for s in list {
        if let Some(a) = &s.auth {
            let _ = write!(
                out,
                "\nuserlist user_{}\n  user {} password {}\n",
                s.backend, a.user, a.password
            );
        }
        if opts.bind_http_https && !s.vhosts.is_empty() {
            let (http, https) = vhost_rules(s, &s.backend);
            http_rules.push((s.backend_weight, http));
            https_rules.push((s.backend_weight, https));
            if let Some(c) = &s.ssl_cert {
                if !https_certs.contains(c) {
                    https_certs.push(c.clone());
                }
            }
        }
        if s.mode == Mode::Http && appid_seen.insert(s.app_id.as_str()) {
            let cleaned = clean(&s.app_id);
            let _ = write!(
                appid,
                "  acl app_{cleaned} hdr(x-marathon-app-id) -i {}\n  use_backend {} if app_{cleaned}\n",
                s.app_id, s.backend
            );
        }
    }
    if opts.bind_http_https {
        let _ = write!(
            out,
            "\nfrontend marathon_http_in\n  bind {}\n  mode http\n",
            opts.http_bind
        );
        push_rules(&mut out, &mut http_rules);
    }
    // Written even with `bind_http_https` off, as marathon-lb does with `--dont-bind-http-https`.
    let _ = write!(
        out,
        "\nfrontend marathon_http_appid_in\n  bind {}\n  mode http\n",
        opts.appid_bind
    );
    out.push_str(&appid);
    if opts.bind_http_https && !https_certs.is_empty() {
        let certs: Vec<String> = https_certs.iter().map(|c| format!("crt {c}")).collect();
        let _ = write!(
            out,
            "\nfrontend marathon_https_in\n  bind {} ssl {}\n  mode http\n",
            opts.https_bind,
            certs.join(" ")
        );
        push_rules(&mut out, &mut https_rules);
    }

    // One frontend per service.
    for s in list {
        let backend = s.backend.as_str();
        match template(s, "FRONTEND_HEAD") {
            Some(t) => out.push_str(&t),
            None => {
                let _ = write!(
                    out,
                    "\nfrontend {backend}\n  bind {}:{}",
                    s.bind_addr, s.service_port
                );
                if let Some(c) = &s.ssl_cert {
                    let _ = write!(out, " ssl crt {c}");
                }
                if let Some(o) = &s.bind_options {
                    let _ = write!(out, " {o}");
                }
                let _ = writeln!(out, "\n  mode {}", s.mode.as_str());
            }
        }
        match template(s, "FRONTEND_BACKEND_GLUE") {
            Some(t) => out.push_str(&t),
            None => {
                let _ = writeln!(out, "  use_backend {backend}");
            }
        }
    }
    // Everything so far is structural.
    let mut hasher = DefaultHasher::new();
    hasher.write(out.as_bytes());

    // One backend per service.
    let mut plans = Vec::with_capacity(list.len());
    let mut ipbuf = String::with_capacity(40);
    let mut namebuf = String::with_capacity(80);
    let mut slot_opts = String::new();
    for s in list {
        let backend = s.backend.as_str();
        let mode = s.mode.as_str();
        let start = out.len();
        match template(s, "BACKEND_HEAD") {
            Some(t) => out.push_str(&t),
            None => {
                let _ = write!(
                    out,
                    "\nbackend {backend}\n  balance {}\n  mode {mode}\n",
                    s.balance
                );
            }
        }
        let first_vhost = s.vhosts.first().map(String::as_str).unwrap_or("");
        if s.mode == Mode::Http {
            if s.use_hsts {
                out.push_str(
                    "  http-response set-header Strict-Transport-Security max-age=15768000\n",
                );
            }
            match template(s, "BACKEND_HTTP_OPTIONS") {
                Some(t) => out.push_str(&t),
                None => out.push_str(
                    "  option forwardfor\n  http-request set-header X-Forwarded-Port %[dst_port]\n  http-request add-header X-Forwarded-Proto https if { ssl_fc }\n",
                ),
            }
            if let Some(p) = &s.proxypath {
                let _ = write!(
                    out,
                    "  http-request set-header Host {first_vhost}\n  http-request replace-path ^{p}/?(.*) /\\1\n"
                );
            }
            if let Some(root) = &s.revproxypath {
                let _ = write!(
                    out,
                    "  acl hdr_location res.hdr(Location) -m found\n  http-response replace-header Location ^(https?://{first_vhost}(:[0-9]+)?)?(/.*) {root}\\3 if hdr_location\n"
                );
            }
        }
        if let Some(nets) = &s.network_allowed {
            for n in nets.split_whitespace() {
                let _ = writeln!(out, "  acl network_allowed src {n}");
            }
            out.push_str(match s.mode {
                Mode::Http => "  http-request allow if network_allowed\n  http-request deny\n",
                Mode::Tcp => {
                    "  tcp-request content accept if network_allowed\n  tcp-request content reject\n"
                }
            });
        }
        // After every `http-request` rule: HAProxy runs redirects after them anyway.
        if let (Mode::Http, Some(r)) = (s.mode, &s.redirpath) {
            let _ = write!(
                out,
                "  acl is_root path -i /\n  acl is_domain hdr(host) -i {first_vhost}\n  redirect code 301 location {r} if is_domain is_root\n"
            );
        }
        if s.sticky {
            match template(s, "BACKEND_STICKY_OPTIONS") {
                Some(t) => out.push_str(&t),
                None => out.push_str("  cookie mesosphere_server_id insert indirect nocache\n"),
            }
        }
        let checks = check_options(s, opts);
        if let Some((_, Some(backend_opts))) = &checks {
            out.push_str(backend_opts);
        }
        hasher.write(&out.as_bytes()[start..]);

        let server_checks = checks.as_ref().map(|(c, _)| c.as_str()).unwrap_or("");
        let fixed_check_port = s
            .health_check
            .as_ref()
            .and_then(|h| h.port)
            .filter(|_| checks.is_some() && s.healthcheck_port_index.is_none());
        let mut taken = HashSet::new();
        let mut servers = Vec::with_capacity(s.servers.len());
        for srv in &s.servers {
            ipbuf.clear();
            push_ip(&mut ipbuf, srv.ip);
            namebuf.clear();
            write_server_name(&mut namebuf, &srv.host, &ipbuf, srv.port);
            let name = namebuf.as_str();
            let id = server_id(name, &mut taken);
            // The hot loop of large configurations: plain pushes, no formatting machinery.
            out.push_str("  server ");
            out.push_str(name);
            out.push(' ');
            out.push_str(&ipbuf);
            out.push(':');
            push_u32(&mut out, srv.port);
            out.push_str(" id ");
            push_u32(&mut out, id);
            if s.sticky {
                let _ = write!(out, " check cookie {}", cookie(name));
            }
            out.push_str(server_checks);
            let check_port = if checks.is_some() {
                srv.check_port.or(fixed_check_port)
            } else {
                None
            };
            if let Some(p) = check_port {
                let _ = write!(out, " port {p}");
            }
            if srv.draining {
                out.push_str(" disabled");
            }
            out.push('\n');
            servers.push(ServerPlan {
                name: name.to_string(),
                ip: srv.ip,
                port: srv.port,
                disabled: srv.draining,
                check_port,
            });
        }
        let cap = capacity(
            servers.len(),
            prev_capacity.get(backend).copied(),
            opts.spare_slots,
            opts.slot_block,
        );
        // The spare slots, `stride_spare_1` …: one `server-template` line, or one line each
        // where every slot needs its own sticky cookie. Their options are structural, since
        // runtime updates cannot change them.
        let spares = cap - servers.len();
        slot_opts.clear();
        slot_opts.push_str(server_checks);
        if let Some(p) = fixed_check_port {
            let _ = write!(slot_opts, " port {p}");
        }
        if s.sticky {
            for k in 1..=spares {
                namebuf.clear();
                let _ = write!(namebuf, "stride_spare_{k}");
                let _ = writeln!(
                    out,
                    "  server {namebuf} 0.0.0.0:0 check cookie {}{slot_opts} disabled",
                    cookie(&namebuf)
                );
            }
        } else if spares > 0 {
            out.push_str("  server-template stride_spare_ 1-");
            push_u32(&mut out, spares as u32);
            out.push_str(" 0.0.0.0:0");
            out.push_str(&slot_opts);
            out.push_str(" disabled\n");
        }
        cap.hash(&mut hasher);
        s.sticky.hash(&mut hasher);
        server_checks.hash(&mut hasher);
        fixed_check_port.hash(&mut hasher);
        plans.push(BackendPlan {
            name: backend.to_string(),
            app_id: s.app_id.clone(),
            capacity: cap,
            checks: checks.is_some() || s.sticky,
            servers,
        });
    }
    Rendered {
        text: out,
        backends: plans,
        structure: hasher.finish(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_cookies_match_marathon_lb() {
        let name = server_name("agent1", "1.1.1.1".parse().expect("ip"), 1024);
        assert_eq!(name, "agent1_1_1_1_1_1024");
        assert_eq!(server_id(&name, &mut HashSet::new()), 28363);
        assert_eq!(cookie(&name), "d6ad48c81f");
        assert_eq!(
            server_name("10.0.1.147", "10.0.1.147".parse().expect("ip"), 25724),
            "10_0_1_147_25724"
        );
        let mut taken = HashSet::new();
        let a = server_id("x", &mut taken);
        let b = server_id("x", &mut taken);
        assert_ne!(a, b, "a collision is re-hashed");
    }

    #[test]
    fn capacity_has_room_and_hysteresis() {
        assert_eq!(capacity(0, None, 4, 8), 8);
        assert_eq!(capacity(4, None, 4, 8), 8);
        assert_eq!(capacity(5, None, 4, 8), 16);
        assert_eq!(capacity(2, Some(16), 4, 8), 16, "kept while it fits");
        assert_eq!(capacity(1, Some(64), 4, 8), 8, "shrunk when far too large");
        assert_eq!(capacity(13, Some(16), 4, 8), 24);
    }

    #[test]
    fn templates_fill_like_python_format() {
        assert_eq!(
            fill(
                "bind {bindAddr}:{servicePort} {{ x }}",
                &[("bindAddr", "*"), ("servicePort", "80")]
            ),
            "bind *:80 { x }"
        );
    }
}
