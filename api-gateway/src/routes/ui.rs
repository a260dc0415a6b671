//! The web UI: the static files of `ui/` (HTML, CSS, JavaScript modules; no build step),
//! compiled into the binary so a fresh container serves them with nothing on disk.
//!
//! `GET /` redirects to `/ui/`; `GET /ui` and `GET /ui/<file>` answer from [`ASSETS`], a table
//! of `include_bytes!` kept by hand (a unit test below fails when a file under `ui/` is missing
//! from it). The UI only talks to this gateway's own `/v2` API, so a strict
//! `Content-Security-Policy` (everything from `'self'`) holds it to "nothing loaded from
//! outside".
//!
//! Caching: the files have no content hash in their names, so they are served with an `ETag`
//! and `Cache-Control: no-cache` (revalidate every time). The common middleware then replaces
//! that with Marathon's `no-cache, no-store, must-revalidate`, as it does for every response;
//! for a UI of this size the difference does not matter.

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::GatewayError;

/// One embedded file: its path under `ui/` and its bytes.
struct Asset {
    path: &'static str,
    body: &'static [u8],
}

macro_rules! assets {
    ($($path:literal),* $(,)?) => {
        &[$(Asset {
            path: $path,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../ui/", $path)),
        }),*]
    };
}

/// Every file of `ui/`. Add new files here (the `every_ui_file_is_embedded` test says which).
static ASSETS: &[Asset] = assets![
    "index.html",
    "favicon.svg",
    "css/stride.css",
    "js/main.js",
    "js/api.js",
    "js/dom.js",
    "js/live.js",
    "js/model.js",
    "js/diff.js",
    "js/views/apps.js",
    "js/views/app.js",
    "js/views/logs.js",
    "js/views/form.js",
    "js/views/deployments.js",
    "js/views/login.js",
    "js/perms.js",
];

/// What the UI may load and connect to: this origin only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'; form-action 'self'";

/// The content type for a file name, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A strong validator per file: FNV-1a over its bytes, computed once.
fn etag(index: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in a.body {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
                format!("\"{h:016x}-{}\"", a.body.len())
            })
            .collect()
    });
    tags.get(index).map(String::as_str).unwrap_or("\"\"")
}

/// `GET /` → 302 to the UI.
pub(crate) async fn root() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

/// `GET /ui` (and `/ui/`, which path normalisation makes the same): the UI's page.
pub(crate) async fn index(req: HttpRequest) -> Result<HttpResponse, GatewayError> {
    serve(&req, "index.html")
}

/// `GET /ui/{file}`.
pub(crate) async fn file(
    req: HttpRequest,
    file: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    let name = file.into_inner();
    let name = name.trim_matches('/');
    serve(&req, if name.is_empty() { "index.html" } else { name })
}

fn serve(req: &HttpRequest, name: &str) -> Result<HttpResponse, GatewayError> {
    let Some((i, asset)) = ASSETS.iter().enumerate().find(|(_, a)| a.path == name) else {
        return Err(GatewayError::uri_not_found(req.path()));
    };
    let tag = etag(i);
    let fresh = req
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == tag || t.trim() == "*");
    let mut res = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::ETAG, tag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if fresh {
        return Ok(res.finish());
    }
    Ok(res
        .insert_header((header::CONTENT_TYPE, content_type(name)))
        .body(asset.body))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use actix_web::{test as atest, App};

    use super::*;

    fn files_under(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files_under(&p, root, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn every_ui_file_is_embedded() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ui");
        let mut on_disk = Vec::new();
        files_under(&root, &root, &mut on_disk);
        let missing: Vec<&String> = on_disk
            .iter()
            .filter(|f| !ASSETS.iter().any(|a| a.path == f.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "add these to ASSETS in api-gateway/src/routes/ui.rs: {missing:?}"
        );
        for a in ASSETS {
            assert_ne!(
                content_type(a.path),
                "application/octet-stream",
                "{}",
                a.path
            );
        }
    }

    fn app() -> App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        App::new()
            .route("/", web::get().to(root))
            .route("/ui", web::get().to(index))
            .route("/ui/{file:.*}", web::get().to(file))
    }

    #[actix_web::test]
    async fn root_redirects_and_files_have_their_types() {
        let srv = atest::init_service(app()).await;
        let res = atest::call_service(&srv, atest::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), 302);
        assert_eq!(
            res.headers().get("location").map(|v| v.as_bytes()),
            Some(&b"/ui/"[..])
        );

        let res =
            atest::call_service(&srv, atest::TestRequest::get().uri("/ui").to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/html; charset=utf-8"[..])
        );
        let tag = res
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .expect("etag");

        let res = atest::call_service(
            &srv,
            atest::TestRequest::get().uri("/ui/js/main.js").to_request(),
        )
        .await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"text/javascript; charset=utf-8"[..])
        );

        let res = atest::call_service(
            &srv,
            atest::TestRequest::get()
                .uri("/ui/index.html")
                .insert_header(("If-None-Match", tag))
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), 304);

        let res = atest::call_service(
            &srv,
            atest::TestRequest::get()
                .uri("/ui/../Cargo.toml")
                .to_request(),
        )
        .await;
        assert_eq!(res.status(), 404);
        let res = atest::call_service(
            &srv,
            atest::TestRequest::get().uri("/ui/nope.js").to_request(),
        )
        .await;
        assert_eq!(res.status(), 404);
    }
}
