//! The web UI in headless Chromium, driven over WebDriver against `stride dev`: create an app in
//! the form (after seeing a 422 placed beside its field), watch it run in the list, scale it, kill
//! a task with scale, read its stdout, roll back a deployment that cannot finish, compare and
//! apply versions, destroy it; a delayed app and its delay reset, a waiting app; the event stream
//! lost and back; then the login form, Basic credentials on every call, a 403 that disables its
//! button, and the stream's fall-back to polling when it answers 401. Screenshots at laptop and
//! phone widths go to `target/ui-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/test` installs them); without them
//! the test says so and passes.

#[path = "../ui/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use stride_tests::{bin, free_port, Api, Cluster, Flags, Proc};
use webdriver::{which, Driver, Session};

const SHORT: Duration = Duration::from_secs(10);
const LONG: Duration = Duration::from_secs(60);
const APP: &str = "/ui-test/web";

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("ui-screenshots")
}

/// Saves the page at laptop width, and at 375 px (as a phone) when `phone`, checking that the
/// phone layout has no horizontal scroll.
async fn shots(s: &Session, name: &str, phone: bool) {
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = s.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(dir.join(format!("{name}-laptop.png")), &png).unwrap_or_else(|e| panic!("{e}"));
    if !phone {
        return;
    }
    s.cdp(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({ "width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": true }),
    )
    .await
    .unwrap_or_else(|e| panic!("phone emulation: {e}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let widths = s
        .eval("[document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth]")
        .await;
    let png = s.screenshot().await;
    std::fs::write(dir.join(format!("{name}-phone.png")), &png).unwrap_or_else(|e| panic!("{e}"));
    let offenders = s
        .eval(
            "Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1).slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))",
        )
        .await;
    s.cdp(
        "Emulation.clearDeviceMetricsOverride",
        serde_json::json!({}),
    )
    .await
    .unwrap_or_else(|e| panic!("end phone emulation: {e}"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scroll = widths[0].as_i64().unwrap_or(0);
    let client = widths[1].as_i64().unwrap_or(0);
    assert!(client <= 400, "the phone emulation did not take: {widths}");
    assert!(
        scroll <= client,
        "{name}: horizontal scroll at 375 px ({widths}); too wide: {offenders}"
    );
}

/// Confirms the open dialog; when the API answered 409 (the app is still deploying, e.g. waiting
/// for health results), the UI asks whether to force, and this confirms that too.
async fn confirm(s: &Session) {
    s.click_css(".modal [data-confirm]", SHORT).await;
    // A second dialog may follow: "The app is being deployed … Force?"
    let forced = s
        .try_wait(Duration::from_secs(2), || async {
            let el = s.find(".modal [data-confirm]").await?;
            let t = s.text(&el).await?;
            (t == "Force").then_some(el)
        })
        .await;
    if let Some(el) = forced {
        eprintln!("ui: the API answered 409; forcing through the UI's dialog");
        s.click(&el)
            .await
            .unwrap_or_else(|e| panic!("click Force: {e}"));
    }
    s.wait(SHORT, "the dialog to close", || async {
        s.find(".overlay").await.is_none().then_some(())
    })
    .await;
}

/// `stride dev`, stopped with SIGTERM at the end so that it kills its tasks; when the test
/// fails, the end of its log is printed first.
struct Dev(Proc);

impl Drop for Dev {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.0.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- stride dev, last lines ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        self.0.terminate(Duration::from_secs(15));
    }
}

async fn app_json(api: &Api) -> Value {
    api.get(&format!("/v2/apps{APP}")).await.body["app"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_runs_an_app_from_create_to_destroy() {
    let (Some(chromium), Some(chromedriver)) = (
        which(&["chromium", "chromium-browser", "google-chrome"]),
        which(&["chromedriver"]),
    ) else {
        eprintln!("SKIPPED: the UI test needs chromium and chromedriver (apt-get install chromium chromium-driver)");
        return;
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // Host ports of its own, away from other `stride dev`s on this machine (31000-32000).
    let lo = free_port().clamp(20000, 65000);
    let _dev = Dev(Proc::spawn(
        "stride-dev",
        &bin("stride"),
        &[
            "dev".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--work-dir".into(),
            dir.path().join("work").display().to_string(),
            "--ports".into(),
            format!("{lo}-{}", lo + 99),
        ],
        dir.path(),
    ));
    let api = Api::new(&base);
    api.until(LONG, "stride dev to answer /ping", |api| async move {
        api.try_get("/ping")
            .await
            .filter(|r| r.status == 200)
            .map(|_| ())
    })
    .await;

    let driver = Driver::start(&chromedriver, dir.path()).await;
    let s = driver.session(&chromium).await;

    // `/` leads to the UI; the event stream connects.
    s.goto(&format!("{base}/")).await;
    s.wait(SHORT, "the redirect to /ui/", || async {
        s.eval("location.pathname")
            .await
            .as_str()
            .filter(|p| *p == "/ui/")
            .map(|_| ())
    })
    .await;
    s.wait_text(".empty", "No apps yet", SHORT).await;
    s.wait_css("#conn[data-state=live]", SHORT).await;
    shots(&s, "01-apps-empty", true).await;

    // Create through the form; a one-character command gets the API's 422 beside the field.
    s.click_css("#create-app", SHORT).await;
    s.fill("#app-id", APP).await;
    s.fill("#app-cmd", "x").await;
    s.fill("#app-instances", "1").await;
    s.fill("#app-cpus", "0.1").await;
    s.fill("#app-mem", "64").await;
    s.fill("#app-ports", "0").await;
    s.fill("#app-env", "GREETING=hello-from-stride").await;
    s.fill("#app-labels", "team=ui").await;
    s.click_css("#hc-enabled", SHORT).await;
    s.select("#hc-protocol", "HTTP").await;
    s.fill("#hc-path", "/").await;
    s.fill("#hc-port-index", "0").await;
    s.fill("#hc-grace", "30").await;
    s.fill("#hc-interval", "2").await;
    s.fill("#hc-timeout", "2").await;
    s.fill("#hc-max-failures", "3").await;
    // The JSON tab shows what the form says, and the form survives the round trip.
    s.click_css("[data-mode=json]", SHORT).await;
    let json = s.eval("document.querySelector('#app-json').value").await;
    let json: Value = serde_json::from_str(json.as_str().unwrap_or_default()).expect("JSON tab");
    assert_eq!(json["env"]["GREETING"], "hello-from-stride", "{json}");
    assert_eq!(json["healthChecks"][0]["protocol"], "HTTP", "{json}");
    s.click_css("[data-mode=form]", SHORT).await;
    assert_eq!(
        s.eval("document.querySelector('#hc-interval').value").await,
        "2"
    );
    s.click_css("#app-submit", SHORT).await;
    let err = s
        .wait_text(".field-error[data-error-for=cmd]", "empty", SHORT)
        .await;
    eprintln!("ui: 422 shown beside the command: {err}");
    s.wait_css(".field-cmd.has-error", SHORT).await;
    shots(&s, "02-form-422", true).await;
    s.fill(
        "#app-cmd",
        "echo $GREETING; exec python3 -m http.server $PORT0",
    )
    .await;
    s.click_css("#app-submit", SHORT).await;
    s.wait(SHORT, "the app's page", || async {
        s.eval("location.hash")
            .await
            .as_str()
            .filter(|h| *h == "#/app/ui-test/web")
            .map(|_| ())
    })
    .await;
    let created = app_json(&api).await;
    assert_eq!(
        created["cmd"],
        "echo $GREETING; exec python3 -m http.server $PORT0"
    );
    assert_eq!(created["env"]["GREETING"], "hello-from-stride");
    assert_eq!(created["labels"]["team"], "ui");
    assert_eq!(created["healthChecks"][0]["intervalSeconds"], 2);
    assert_eq!(created["healthChecks"][0]["portIndex"], 0);

    // The list shows it running, in its group.
    s.goto(&format!("{base}/ui/#/apps")).await;
    let row = format!("tr[data-app-id=\"{APP}\"]");
    s.wait_text(&format!("{row} .instances-count"), "1 / 1", LONG)
        .await;
    s.wait_css(".tree a[data-group=\"/ui-test\"]", SHORT).await;
    // Healthy once the health checker's results arrive; then the deployment, which waits for
    // them, finishes and the app is running. Without results it stays deploying (soft).
    let healthy = s
        .try_wait(Duration::from_secs(30), || async {
            let el = s.find(&format!("{row} .health-counts .ok")).await?;
            s.text(&el).await.filter(|t| t.contains("1 healthy"))
        })
        .await;
    if healthy.is_some() {
        eprintln!("ui: {APP} is healthy in the list");
        s.wait_css(&format!("{row}[data-status=running]"), LONG)
            .await;
    } else {
        let now = s
            .eval(&format!("document.querySelector('{row}').dataset.status"))
            .await;
        eprintln!(
            "ui: SOFT: no health results for {APP} within 30 s (no health checker in stride dev?); \
             it is {now} in the list, with its task running"
        );
    }
    // Search and status filters.
    s.fill("input.search", "no-such-app").await;
    s.wait_text(".list", "No app matches", SHORT).await;
    s.fill("input.search", "web").await;
    s.wait_css(&row, SHORT).await;
    shots(&s, "03-apps-running", true).await;

    // Scale to 2 from the app's page.
    s.click_css(&format!("{row} td.name a"), SHORT).await;
    s.click_css("[data-action=scale]", SHORT).await;
    s.fill("#scale-instances", "2").await;
    confirm(&s).await;
    s.wait_text(".facts .instances-count", "2 / 2", LONG).await;
    s.wait(LONG, "two running tasks in the table", || async {
        (s.find_all("tr.task-row[data-state=TASK_RUNNING]")
            .await
            .len()
            == 2)
            .then_some(())
    })
    .await;
    shots(&s, "04-app-tasks", true).await;

    // The log view tails stdout.
    s.click_css("[data-tab=logs]", SHORT).await;
    let logs = s
        .wait(
            LONG,
            "stdout in the log view, or 'logs not available'",
            || async {
                if let Some(el) = s.find(".log-status[data-unavailable]").await {
                    return s.text(&el).await.map(Err::<String, String>);
                }
                let el = s.find("pre.log").await?;
                s.text(&el)
                    .await
                    .filter(|t| t.contains("hello-from-stride"))
                    .map(Ok)
            },
        )
        .await;
    match &logs {
        Ok(_) => eprintln!("ui: stdout of the task shows hello-from-stride"),
        Err(why) => {
            let r = api
                .get("/v2/tasks/x/files/read?path=stdout&offset=-1")
                .await;
            assert!(
                r.status == 404 || r.status == 501,
                "the UI says logs are unavailable ({why}) although the file route answers {}",
                r.status
            );
            eprintln!("ui: SOFT: the sandbox file route is not there yet ({why})");
        }
    }
    if logs.is_ok() {
        s.click_css("[data-file=stderr]", SHORT).await;
        s.wait_css("pre.log[data-file=stderr]", SHORT).await;
        s.click_css("[data-file=stdout]", SHORT).await;
        s.wait_text("pre.log[data-file=stdout]", "hello-from-stride", SHORT)
            .await;
    }
    shots(&s, "05-app-logs", true).await;

    // Kill one task and scale down with it.
    s.click_css("[data-tab=tasks]", SHORT).await;
    let victim = s
        .wait(SHORT, "a task row", || async {
            s.eval(
                "(document.querySelector('tr.task-row') || {dataset: {}}).dataset.taskId || null",
            )
            .await
            .as_str()
            .map(str::to_string)
        })
        .await;
    s.click_css(&format!("input[data-task=\"{victim}\"]"), SHORT)
        .await;
    s.click_css("[data-action=kill-scale]", SHORT).await;
    confirm(&s).await;
    s.wait_text(".facts .instances-count", "/ 1", LONG).await;
    s.wait(LONG, "the killed task to leave the table", || async {
        s.find(&format!("tr.task-row[data-task-id=\"{victim}\"]"))
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(app_json(&api).await["instances"], 1);

    // An update that cannot finish (64 cpus), rolled back from the deployments page.
    s.goto(&format!("{base}/ui/#/edit/ui-test/web")).await;
    s.wait_css("#app-cpus", SHORT).await;
    s.wait(SHORT, "the form to be filled", || async {
        let v = s.eval("document.querySelector('#app-cpus').value").await;
        (v == "0.1").then_some(())
    })
    .await;
    s.fill("#app-cpus", "64").await;
    s.click_css("#app-submit", SHORT).await;
    let forced = s
        .try_wait(Duration::from_secs(3), || async {
            let el = s.find(".modal [data-confirm]").await?;
            (s.text(&el).await? == "Force").then_some(el)
        })
        .await;
    if let Some(el) = forced {
        eprintln!("ui: the update answered 409; forcing through the UI's dialog");
        s.click(&el)
            .await
            .unwrap_or_else(|e| panic!("click Force: {e}"));
    }
    s.wait(SHORT, "the update to be stored", || async {
        (app_json(&api).await["cpus"].as_f64() == Some(64.0)).then_some(())
    })
    .await;
    s.click_css("a[data-nav=deployments]", SHORT).await;
    let big = s
        .wait(LONG, "the 64-cpu deployment in the list", || async {
            let ds = api.get("/v2/deployments").await.body;
            let arr = ds.as_array()?.clone();
            let d = arr.into_iter().find(|d| {
                d["affectedApps"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == APP))
            })?;
            let id = d["id"].as_str()?.to_string();
            let css = format!("article.deployment[data-deployment-id=\"{id}\"]");
            s.find(&css).await.map(|_| id)
        })
        .await;
    let card = format!("article.deployment[data-deployment-id=\"{big}\"]");
    s.wait_text(&format!("{card} .step-count"), "Step", SHORT)
        .await;
    s.wait_css("#deployment-count:not([hidden])", SHORT).await;
    shots(&s, "06-deployments", true).await;
    s.click_css(&format!("{card} [data-action=rollback]"), SHORT)
        .await;
    confirm(&s).await;
    s.wait(LONG, "the rollback to restore 0.1 cpus", || async {
        (app_json(&api).await["cpus"].as_f64() == Some(0.1)).then_some(())
    })
    .await;
    s.wait(LONG, "the 64-cpu deployment to leave the page", || async {
        s.find(&card).await.is_none().then_some(())
    })
    .await;

    // Whatever deployment of the app is left (the rollback's own, if it waits for health
    // results) is stopped from the page.
    let left = api.get("/v2/deployments").await.body;
    let left: Vec<String> = left
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|d| {
                    d["affectedApps"]
                        .as_array()
                        .is_some_and(|x| x.iter().any(|v| v == APP))
                })
                .filter_map(|d| d["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for id in left {
        let card = format!("article.deployment[data-deployment-id=\"{id}\"]");
        if s.try_wait(SHORT, || async { s.find(&card).await })
            .await
            .is_none()
        {
            continue; // finished meanwhile
        }
        s.click_css(&format!("{card} [data-action=stop]"), SHORT)
            .await;
        confirm(&s).await;
        s.wait(LONG, "the stopped deployment to leave the page", || async {
            s.find(&card).await.is_none().then_some(())
        })
        .await;
        eprintln!("ui: stopped the deployment left after the rollback");
    }

    // Versions: the diff between the last two shows the cpus change; configuration as JSON.
    s.goto(&format!("{base}/ui/#/app/ui-test/web?tab=versions"))
        .await;
    s.wait(LONG, "three versions listed", || async {
        (s.find_all("table.versions tr[data-version]").await.len() >= 3).then_some(())
    })
    .await;
    // Newest against the one before: the 64-cpu update and its rollback, in whichever order
    // the versions fall.
    s.wait_text("pre.diff", "\"cpus\": 64", SHORT).await;
    s.wait_text("pre.diff", "\"cpus\": 0.1", SHORT).await;
    shots(&s, "07-app-versions", true).await;
    s.click_css("[data-tab=config]", SHORT).await;
    s.wait_text("pre.config", "\"cmd\": \"echo $GREETING", SHORT)
        .await;

    // Apply an earlier version again: the one scaled to two instances.
    s.click_css("[data-tab=versions]", SHORT).await;
    let listed = api.get(&format!("/v2/apps{APP}/versions")).await.body;
    let mut two = None;
    for v in listed["versions"].as_array().cloned().unwrap_or_default() {
        let v = v.as_str().unwrap_or_default().to_string();
        let def = api.get(&format!("/v2/apps{APP}/versions/{v}")).await.body;
        if def["instances"] == 2 && def["cpus"].as_f64() == Some(0.1) {
            two = Some(v);
        }
    }
    let two = two.expect("a version with two instances");
    let versions = s.find_all("table.versions tr[data-version]").await.len();
    s.click_css(
        &format!("table.versions tr[data-version=\"{two}\"] [data-action=apply-version]"),
        SHORT,
    )
    .await;
    confirm(&s).await;
    s.wait(LONG, "the old version applied, as a new one", || async {
        let n = s.find_all("table.versions tr[data-version]").await.len();
        (n > versions && app_json(&api).await["instances"] == 2).then_some(())
    })
    .await;

    // Destroy.
    s.click_css("[data-action=destroy]", SHORT).await;
    confirm(&s).await;
    s.wait(SHORT, "the list after destroying", || async {
        s.eval("location.hash")
            .await
            .as_str()
            .filter(|h| h.starts_with("#/apps"))
            .map(|_| ())
    })
    .await;
    api.until(LONG, "the app to be gone", |api| async move {
        (api.try_get(&format!("/v2/apps{APP}")).await?.status == 404).then_some(())
    })
    .await;
    s.wait(LONG, "the row to disappear", || async {
        s.find(&row).await.is_none().then_some(())
    })
    .await;

    // A crashing app is delayed, with its failure on the debug tab and the delay reset there.
    let r = api
        .post(
            "/v2/apps",
            r#"{"id":"/ui-test/crash","cmd":"echo about to fail; exit 3","cpus":0.01,"mem":16,"backoffSeconds":120}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let crash_row = "tr[data-app-id=\"/ui-test/crash\"]";
    s.fill("input.search", "").await; // the search is kept for the tab: "web" would hide it
    s.wait_css(&format!("{crash_row}[data-status=delayed]"), LONG)
        .await;
    s.click_css(&format!("{crash_row} td.name a"), SHORT).await;
    s.wait_css("[data-banner=delayed]", SHORT).await;
    s.click_css("[data-tab=debug]", SHORT).await;
    s.wait_text("[data-section=last-failure]", "TASK_FAILED", SHORT)
        .await;
    shots(&s, "10-app-debug", true).await;
    s.click_css(
        "[data-section=queue] ~ .actions [data-action=reset-delay]",
        SHORT,
    )
    .await;
    s.wait_text(".toast-ok", "Launch delay reset", SHORT).await;
    let r = api.delete("/v2/apps/ui-test/crash").await;
    assert_eq!(r.status, 200, "{}", r.text);

    // An app that no agent can take is waiting, with the offers' verdict in a banner.
    let r = api
        .post(
            "/v2/apps",
            r#"{"id":"/ui-test/huge","cmd":"sleep 1000","cpus":64,"mem":16}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.goto(&format!("{base}/ui/#/apps")).await;
    s.wait_css(
        "tr[data-app-id=\"/ui-test/huge\"][data-status=waiting]",
        LONG,
    )
    .await;
    s.click_css("tr[data-app-id=\"/ui-test/huge\"] td.name a", SHORT)
        .await;
    s.wait_text("[data-banner=waiting]", "InsufficientCpus", SHORT)
        .await;
    let r = api.delete("/v2/apps/ui-test/huge").await;
    assert_eq!(r.status, 200, "{}", r.text);

    // No script errors on the way.
    let errors: Vec<(String, String)> = s
        .console()
        .await
        .into_iter()
        .filter(|(level, msg)| level == "SEVERE" && !msg.contains("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "browser console errors: {errors:?}");

    stream_comes_back(&s).await;
    auth_in_the_browser(&s, &base, &api).await;

    s.quit().await;
}

/// A stream that cannot be reached shows "offline", is retried, and is live again once the
/// gateway answers (the outage is simulated in the page: the EventSource fails and so does fetch).
async fn stream_comes_back(s: &Session) {
    s.wait_css("#conn[data-state=live]", SHORT).await;
    s.execute(
        r#"
        window.__real = { fetch: window.fetch, EventSource: window.EventSource };
        window.fetch = async (url, opts) => {
          if (String(url).startsWith('/v2/events')) throw new TypeError('Failed to fetch');
          return window.__real.fetch(url, opts);
        };
        class DeadEventSource {
          constructor() { this.readyState = 0; setTimeout(() => { this.readyState = 2; if (this.onerror) this.onerror(new Event('error')); }, 20); }
          addEventListener() {}
          close() { this.readyState = 2; }
        }
        DeadEventSource.CONNECTING = 0; DeadEventSource.OPEN = 1; DeadEventSource.CLOSED = 2;
        window.EventSource = DeadEventSource;
        window.stride.live.restart();
        "#,
        vec![],
    )
    .await;
    s.wait_css("#conn[data-state=offline]", SHORT).await;
    s.execute(
        "window.fetch = window.__real.fetch; window.EventSource = window.__real.EventSource;",
        vec![],
    )
    .await;
    s.wait_css("#conn[data-state=live]", Duration::from_secs(20))
        .await;
}

/// Authentication as the UI sees it, with the API's answers simulated in the page (Stride's
/// authentication is not there yet): 401 → the login form → credentials on every call; 403 on an
/// action disables that button; a 401 on the event stream → polling every 5 s.
async fn auth_in_the_browser(s: &Session, base: &str, api: &Api) {
    let r = api
        .post(
            "/v2/apps",
            r#"{"id":"/ui-test/auth","cmd":"sleep 1000","cpus":0.01,"mem":16,"instances":0}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    s.goto(&format!("{base}/ui/#/app/ui-test/auth")).await;
    s.wait_css("[data-action=scale]", SHORT).await;
    // From here on the page's fetch behaves like an API with Basic auth for ui:secret, where
    // scaling is forbidden, and EventSource like a stream that refuses the browser.
    s.execute(
        r#"
        const realFetch = window.fetch.bind(window);
        window.__seen = [];
        window.fetch = async (url, opts = {}) => {
          const auth = (opts.headers || {}).Authorization || '';
          window.__seen.push([String(url), opts.method || 'GET', auth]);
          const json = (status, body, extra = {}) => new Response(JSON.stringify(body), {
            status, headers: { 'Content-Type': 'application/json', ...extra } });
          if (String(url).startsWith('/v2/events')) {
            return json(401, { message: 'Unauthorized' }, { 'WWW-Authenticate': 'Basic realm="Mesosphere"' });
          }
          if (auth !== 'Basic ' + btoa('ui:secret')) {
            return json(401, { message: 'Unauthorized' }, { 'WWW-Authenticate': 'Basic realm="Mesosphere"' });
          }
          if ((opts.method || 'GET') === 'PUT') {
            return json(403, { message: 'Not Authorized to perform this action!' });
          }
          return realFetch(url, opts);
        };
        class RefusedEventSource {
          constructor() { this.readyState = 0; setTimeout(() => { this.readyState = 2; if (this.onerror) this.onerror(new Event('error')); }, 20); }
          addEventListener() {}
          close() { this.readyState = 2; }
        }
        RefusedEventSource.CONNECTING = 0; RefusedEventSource.OPEN = 1; RefusedEventSource.CLOSED = 2;
        window.EventSource = RefusedEventSource;
        sessionStorage.removeItem('stride.auth');
        window.stride.live.restart();
        "#,
        vec![],
    )
    .await;
    s.wait_css("#conn[data-state=polling]", SHORT).await;
    // The next refresh meets a 401: the login form.
    s.wait_css("#login-user", SHORT).await;
    shots(s, "08-login", true).await;
    s.fill("#login-user", "ui").await;
    s.fill("#login-password", "wrong").await;
    s.click_css(".login button[type=submit]", SHORT).await;
    s.wait_text(".login .form-summary", "Wrong user name or password", SHORT)
        .await;
    s.fill("#login-password", "secret").await;
    s.click_css(".login button[type=submit]", SHORT).await;
    s.wait(SHORT, "the login form to close", || async {
        s.find("#login-user").await.is_none().then_some(())
    })
    .await;
    s.wait_css("#logout:not([hidden])", SHORT).await;
    assert_eq!(
        s.eval("sessionStorage.getItem('stride.auth')").await,
        "Basic dWk6c2VjcmV0",
        "credentials kept in sessionStorage"
    );
    // Polling refreshes with the credentials.
    s.wait(SHORT, "an authorised refresh while polling", || async {
        let n = s
            .eval("window.__seen.filter(([u, m, a]) => u.startsWith('/v2/apps/') && a === 'Basic dWk6c2VjcmV0').length")
            .await;
        (n.as_i64().unwrap_or(0) >= 2).then_some(())
    })
    .await;

    // A 403 on an action: the message, and the button disabled.
    s.click_css("[data-action=resume]", SHORT).await;
    s.fill("#scale-instances", "1").await;
    s.click_css(".modal [data-confirm]", SHORT).await;
    s.wait_text(".toast-error", "Not Authorized", SHORT).await;
    s.wait_css("[data-action=resume][data-forbidden=true]", SHORT)
        .await;
    assert_eq!(
        s.eval("document.querySelector('[data-action=resume]').disabled")
            .await,
        true
    );
    let unauthenticated = s
        .eval("window.__seen.filter(([u, m, a]) => !a && !u.startsWith('/v2/events')).length")
        .await;
    eprintln!("ui: calls without credentials before the login: {unauthenticated}");
    let after_login_without = s
        .eval(
            "(() => { const i = window.__seen.findIndex(([u, m, a]) => a === 'Basic dWk6c2VjcmV0'); \
             return window.__seen.slice(i).filter(([u, m, a]) => !a && !u.startsWith('/v2/events')).length; })()",
        )
        .await;
    assert_eq!(
        after_login_without, 0,
        "every call after the login carries the credentials"
    );
    shots(s, "09-forbidden", false).await;

    let r = api.delete("/v2/apps/ui-test/auth").await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// A bearer token for `name` with `role`, and its `[[tokens]]` entry, from the gateway's
/// `new-token`.
fn new_token(name: &str, role: &str) -> (String, String) {
    let out = std::process::Command::new(bin("stride-api-gateway"))
        .args(["new-token", name, "--roles", role])
        .output()
        .unwrap_or_else(|e| panic!("stride-api-gateway new-token: {e}"));
    assert!(out.status.success(), "new-token failed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let token = text
        .lines()
        .find_map(|l| l.split("(shown once): ").nth(1))
        .unwrap_or_else(|| panic!("no token in {text}"))
        .trim()
        .to_string();
    let entry: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    (token, entry.join("\n"))
}

/// The names of the buttons and links with a `data-action` on the page.
async fn actions_shown(s: &Session) -> Vec<String> {
    let v = s
        .eval("Array.from(document.querySelectorAll('main [data-action]')).map(e => e.dataset.action)")
        .await;
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Events the page's stream delivered since `record_events`, as `[type, app id]`.
async fn recorded_events(s: &Session) -> Vec<(String, String)> {
    let v = s.eval("window.__events || []").await;
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e[0].as_str().unwrap_or_default().to_string(),
                        e[1].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn record_events(s: &Session) {
    s.execute(
        "window.__events = []; window.stride.live.on((t, d) => window.__events.push([t, \
         String((d && (d.appId || (d.appDefinition && d.appDefinition.id))) || '')]));",
        vec![],
    )
    .await;
}

/// Real processes with authentication on: a team user logs in through the form (after a wrong
/// password), sees only its team's apps, creates one through the form and sees it run, follows
/// the event stream with its credentials, meets a 403 as a plain message; logging out brings the
/// form back; a view-only user logged in with a bearer token is offered no action at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_logs_in_and_offers_only_what_the_role_allows() {
    let (Some(chromium), Some(chromedriver)) = (
        which(&["chromium", "chromium-browser", "google-chrome"]),
        which(&["chromedriver"]),
    ) else {
        eprintln!("SKIPPED: the UI test needs chromium and chromedriver (apt-get install chromium chromium-driver)");
        return;
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let (viewer_token, viewer_entry) = new_token("team-a-viewer", "team-a-view");
    let security = dir.path().join("auth.toml");
    std::fs::write(
        &security,
        format!(
            "[[users]]\nname = \"admin\"\npassword_hash = \"{}\"\nroles = [\"admin\"]\n\
             [[users]]\nname = \"alice\"\npassword_hash = \"{}\"\nroles = [\"team-a\"]\n\
             {viewer_entry}\n\
             [roles.admin]\nsystem = [\"*\"]\npaths = [{{ prefix = \"/\", actions = [\"*\"] }}]\n\
             [roles.team-a]\nsystem = []\n\
             paths = [{{ prefix = \"/team-a\", actions = [\"view\", \"create\", \"update\", \"delete\"] }}]\n\
             [roles.team-a-view]\nsystem = []\n\
             paths = [{{ prefix = \"/team-a\", actions = [\"view\"] }}]\n",
            stride_tests::hash_password("admin-pw"),
            stride_tests::hash_password("alice-pw"),
        ),
    )
    .expect("security file");
    let cluster = Cluster::start_with(
        1,
        1,
        Flags {
            gateway: vec!["--auth-config".into(), security.display().to_string()],
            ..Flags::default()
        },
    );
    let base = cluster.api.base.clone();
    let admin = cluster.api.as_user("admin", "admin-pw");
    let alice = cluster.api.as_user("alice", "alice-pw");
    admin
        .until(LONG, "a leader", |api| async move {
            api.try_get("/v2/leader").await.filter(|r| r.status == 200)
        })
        .await;

    // What the UI derives its buttons from.
    assert_eq!(cluster.api.get("/v2/whoami").await.status, 401);
    let me = alice.get("/v2/whoami").await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(
        me.body,
        serde_json::json!({
            "name": "alice", "authorization": "roles", "system": [],
            "paths": [{"prefix": "/team-a", "actions": ["view", "create", "update", "delete"]}],
        })
    );
    let viewer = cluster
        .api
        .with_auth(Some(&format!("Bearer {viewer_token}")));
    assert_eq!(
        viewer.get("/v2/whoami").await.body["paths"],
        serde_json::json!([{"prefix": "/team-a", "actions": ["view"]}])
    );
    assert_eq!(
        admin.get("/v2/whoami").await.body["system"],
        serde_json::json!(["view", "update", "abdicate"])
    );

    // Another team's app, made by the admin through the API.
    let r = admin
        .post(
            "/v2/apps",
            r#"{"id":"/team-b/secret","cmd":"sleep 1000","cpus":0.01,"mem":16}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let driver = Driver::start(&chromedriver, dir.path()).await;
    let s = driver.session(&chromium).await;

    // The first call meets the 401: the login form.
    s.goto(&format!("{base}/")).await;
    s.wait_css("#login-user", SHORT).await;
    shots(&s, "20-auth-login", true).await;
    s.fill("#login-user", "alice").await;
    s.fill("#login-password", "not-alices-password").await;
    s.click_css(".login button[type=submit]", SHORT).await;
    s.wait_text(".login .form-summary", "Wrong user name or password", SHORT)
        .await;
    assert_eq!(
        s.eval("sessionStorage.getItem('stride.auth')").await,
        Value::Null,
        "refused credentials are not kept"
    );
    shots(&s, "21-auth-wrong-password", true).await;
    s.fill("#login-password", "alice-pw").await;
    s.click_css(".login button[type=submit]", SHORT).await;
    s.wait(SHORT, "the login form to close", || async {
        s.find("#login-user").await.is_none().then_some(())
    })
    .await;
    s.wait_text("#user", "alice", SHORT).await;
    s.wait_css("#logout", SHORT).await;
    assert_eq!(
        s.eval("sessionStorage.getItem('stride.auth')").await,
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:alice-pw")
        ),
        "the credentials are kept for the tab"
    );
    // The event stream carries the credentials too: live, not polling.
    s.wait_css("#conn[data-state=live]", SHORT).await;
    record_events(&s).await;

    // Only team-a is there: no row, no group of team-b.
    s.wait_text(".empty", "No apps yet", SHORT).await;
    assert!(s.find("tr[data-app-id=\"/team-b/secret\"]").await.is_none());
    assert!(s.find(".tree a[data-group=\"/team-b\"]").await.is_none());

    // Create through the form: the button leads to the group the role may create in.
    let create = s
        .eval("document.querySelector('#create-app').getAttribute('href')")
        .await;
    assert!(
        create.as_str().is_some_and(|h| h.contains("team-a")),
        "Create app leads into /team-a: {create}"
    );
    s.click_css("#create-app", SHORT).await;
    assert_eq!(
        s.eval("document.querySelector('#app-id').value").await,
        "/team-a/"
    );
    // Outside the role's prefix: the API's 403 beside the id, and the button stays usable.
    s.fill("#app-id", "/team-b/mine").await;
    s.fill("#app-cmd", "sleep 1000").await;
    s.fill("#app-instances", "1").await;
    s.fill("#app-cpus", "0.05").await;
    s.fill("#app-mem", "16").await;
    s.fill("#app-ports", "").await;
    s.click_css("#app-submit", SHORT).await;
    s.wait_text(
        ".field-error[data-error-for=id]",
        "Not allowed for your role",
        SHORT,
    )
    .await;
    assert_eq!(
        s.eval("document.querySelector('#app-submit').disabled")
            .await,
        false
    );
    shots(&s, "22-auth-create-forbidden", true).await;
    s.fill("#app-id", "/team-a/web").await;
    s.click_css("#app-submit", SHORT).await;
    s.wait(SHORT, "the new app's page", || async {
        s.eval("location.hash")
            .await
            .as_str()
            .filter(|h| *h == "#/app/team-a/web")
            .map(|_| ())
    })
    .await;
    assert_eq!(
        alice.get("/v2/apps/team-a/web").await.body["app"]["cmd"],
        "sleep 1000"
    );
    // Its page offers what the role allows: no kill (not granted), scale and destroy.
    s.wait_css("[data-action=scale]", SHORT).await;
    s.wait_css("tr.task-row[data-state=TASK_RUNNING]", LONG)
        .await;
    let offered = actions_shown(&s).await;
    for a in ["scale", "restart", "suspend", "edit", "destroy"] {
        assert!(offered.iter().any(|x| x == a), "{a} offered: {offered:?}");
    }
    for a in ["kill", "kill-scale"] {
        assert!(
            !offered.iter().any(|x| x == a),
            "{a} not offered: {offered:?}"
        );
    }

    // Running, in the list; team-b's app is still not there.
    s.goto(&format!("{base}/ui/#/apps")).await;
    let row = "tr[data-app-id=\"/team-a/web\"]";
    s.wait_css(&format!("{row}[data-status=running]"), LONG)
        .await;
    s.wait_text(&format!("{row} .instances-count"), "1 / 1", SHORT)
        .await;
    assert!(s.find("tr[data-app-id=\"/team-b/secret\"]").await.is_none());
    shots(&s, "23-auth-team-apps", true).await;

    // Changes come over the stream: team-a's, never team-b's.
    let r = admin
        .put("/v2/apps/team-b/secret", r#"{"instances":2}"#)
        .await;
    assert!(r.status == 200 || r.status == 201, "{}", r.text);
    let r = admin.put("/v2/apps/team-a/web", r#"{"instances":2}"#).await;
    assert!(r.status == 200 || r.status == 201, "{}", r.text);
    s.wait_text(&format!("{row} .instances-count"), "/ 2", LONG)
        .await;
    s.wait(
        LONG,
        "an event about /team-a/web on the page's stream",
        || async {
            recorded_events(&s)
                .await
                .iter()
                .any(|(_, app)| app == "/team-a/web")
                .then_some(())
        },
    )
    .await;
    let events = recorded_events(&s).await;
    assert!(
        events.iter().all(|(_, app)| !app.starts_with("/team-b")),
        "team-b's events reached alice: {events:?}"
    );
    assert_eq!(
        s.eval("document.querySelector('#conn').dataset.state")
            .await,
        "live"
    );

    // Another team's app asked for by its address: a plain 403 message.
    s.goto(&format!("{base}/ui/#/app/team-b/secret")).await;
    s.wait_text(
        ".banners .notice-error",
        "Not allowed for your role: alice may not view /team-b/secret",
        SHORT,
    )
    .await;
    assert!(s.find("[data-tab=tasks]").await.is_none(), "no tabs");
    assert!(s.find("[data-action=scale]").await.is_none());
    shots(&s, "24-auth-forbidden-app", true).await;

    // Logging out forgets the credentials and brings the form back.
    s.click_css("#logout", SHORT).await;
    s.wait_css("#login-user", SHORT).await;
    assert_eq!(
        s.eval("sessionStorage.getItem('stride.auth')").await,
        Value::Null
    );
    assert!(s.find("#logout:not([hidden])").await.is_none());

    // A view-only role, logged in with a bearer token, is offered nothing to do.
    s.click_css("[data-login-mode=token]", SHORT).await;
    s.fill("#login-token", &viewer_token).await;
    s.click_css(".login button[type=submit]", SHORT).await;
    s.wait(SHORT, "the login form to close", || async {
        s.find("#login-token").await.is_none().then_some(())
    })
    .await;
    s.wait_text("#user", "team-a-viewer", SHORT).await;
    s.goto(&format!("{base}/ui/#/apps")).await;
    s.wait_css(&format!("{row}[data-status=running]"), LONG)
        .await;
    assert!(s.find("#create-app").await.is_none(), "no Create app");
    assert!(s.find("tr[data-app-id=\"/team-b/secret\"]").await.is_none());
    s.click_css(&format!("{row} td.name a"), SHORT).await;
    s.wait_css("[data-view-only]", SHORT).await;
    s.wait_css("tr.task-row[data-state=TASK_RUNNING]", LONG)
        .await;
    let offered = actions_shown(&s).await;
    assert!(
        offered.is_empty(),
        "a view-only role is offered no action: {offered:?}"
    );
    s.wait_css("#conn[data-state=live]", SHORT).await;
    shots(&s, "25-auth-view-only", true).await;
    s.click_css("[data-tab=versions]", SHORT).await;
    s.wait_css("table.versions tr[data-version]", SHORT).await;
    assert!(s.find("[data-action=apply-version]").await.is_none());
    s.click_css("a[data-nav=deployments]", SHORT).await;
    s.wait_css(".deployments-page", SHORT).await;

    let errors: Vec<(String, String)> = s
        .console()
        .await
        .into_iter()
        .filter(|(level, msg)| level == "SEVERE" && !msg.contains("Failed to load resource"))
        .collect();
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    s.quit().await;
}
