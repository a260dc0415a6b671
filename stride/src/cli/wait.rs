//! `--wait`: follow a deployment to its end.
//!
//! ```text
//!  open /v2/events (deployment_success, deployment_failed)   before the request that deploys
//!        │
//!  request ──► deployment id
//!        │
//!  loop every 300 ms: GET /v2/deployments (progress), GET /v2/queue each second (why it waits)
//!        ├─ event deployment_success for the id            → done (exit 0)
//!        ├─ event deployment_failed for the id             → failed (exit 5)
//!        ├─ gone from the list, and no event within 2 s    → done (Marathon's own rule)
//!        └─ past --timeout                                 → timed out (exit 6)
//! ```
//!
//! The list alone cannot tell a finished deployment from a cancelled or rolled-back one (both
//! disappear), so the event stream is opened before the request and read alongside; a server
//! without it still works, by the list alone. A stream that opens only after the request could
//! miss the end of a quick deployment.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use tokio::sync::mpsc;

use super::client::{is_server_error, Client};
use super::error::{human_duration, CliError};
use super::output::{actions, held, queue_item};

const POLL: Duration = Duration::from_millis(300);
const QUEUE_POLL: Duration = Duration::from_secs(1);
/// After the deployment left the list: how long to wait for its event before calling it done.
const EVENT_GRACE: Duration = Duration::from_secs(2);
/// How long opening the event stream may take before `--wait` goes on without it.
const STREAM_OPEN: Duration = Duration::from_secs(5);
/// How long the API may be unreachable, or answer 5xx, during a wait (a leader failover).
const OUTAGE_PATIENCE: Duration = Duration::from_secs(15);

/// How a deployment ended, by the event stream.
#[derive(Debug)]
struct Ended {
    id: String,
    failed: Option<String>,
}

/// The open event stream, read by a background task.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Ended>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens `/v2/events` for the end of deployments; `None` when the server does not serve it.
pub async fn open_events(client: &Client) -> Option<Events> {
    let open = client
        .request(Method::GET, "/v2/events")
        .query(&[
            ("event_type", "deployment_success"),
            ("event_type", "deployment_failed"),
        ])
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send();
    // The stream only sharpens the answer; a server slow to open it must not hold the command.
    let resp = tokio::time::timeout(STREAM_OPEN, open)
        .await
        .ok()?
        .ok()
        .filter(|r| r.status().is_success())?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(read_events(resp, tx));
    Some(Events { rx, task })
}

async fn read_events(mut resp: reqwest::Response, tx: mpsc::UnboundedSender<Ended>) {
    let mut buf: Vec<u8> = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        buf.extend_from_slice(&chunk);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if let Some(ended) = parse_event_line(&String::from_utf8_lossy(&line)) {
                if tx.send(ended).is_err() {
                    return;
                }
            }
        }
    }
}

/// A `data:` line of a deployment's end, as the event it carries.
fn parse_event_line(line: &str) -> Option<Ended> {
    let data = line.trim_end().strip_prefix("data:")?.trim_start();
    let event: Value = serde_json::from_str(data).ok()?;
    let id = event["id"]
        .as_str()
        .or_else(|| event["plan"]["id"].as_str())?
        .to_string();
    match event["eventType"].as_str()? {
        "deployment_success" => Some(Ended { id, failed: None }),
        "deployment_failed" => Some(Ended {
            id,
            failed: Some(
                event["reason"]
                    .as_str()
                    .filter(|r| !r.is_empty())
                    .unwrap_or("cancelled or rolled back")
                    .to_string(),
            ),
        }),
        _ => None,
    }
}

/// Follows deployment `id` until it ends or `timeout` (`None`: no bound) passes, drawing its
/// progress on stderr. `started` is when the request that made the deployment went out, for
/// the time it took.
pub async fn follow(
    client: &Client,
    id: &str,
    mut events: Option<Events>,
    timeout: Option<Duration>,
    started: Instant,
) -> Result<(), CliError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut progress = Progress::new(id);
    let mut gone_since: Option<Instant> = None;
    let mut outage_since: Option<Instant> = None;
    let mut last_queue: Option<Instant> = None;
    let mut note: Option<String> = None;
    loop {
        if let Some(ev) = events.as_mut() {
            while let Ok(ended) = ev.rx.try_recv() {
                if ended.id == id {
                    return progress.end(ended.failed, started, id);
                }
            }
        }
        // A poll never outlasts the deadline, even against an API that hangs.
        let poll = client.get("/v2/deployments");
        let polled = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left.max(POLL), poll).await {
                    Ok(r) => r,
                    Err(_) => {
                        progress.clear();
                        return Err(CliError::TimedOut {
                            id: id.to_string(),
                            after: timeout.unwrap_or_default(),
                        });
                    }
                }
            }
            None => poll.await,
        };
        match polled {
            Ok(reply) => {
                outage_since = None;
                let current = reply
                    .body
                    .as_array()
                    .and_then(|ds| ds.iter().find(|d| d["id"].as_str() == Some(id)));
                match current {
                    Some(d) => {
                        gone_since = None;
                        if last_queue.is_none_or(|t| t.elapsed() >= QUEUE_POLL) {
                            last_queue = Some(Instant::now());
                            note = queue_note(client, d).await;
                        }
                        progress.draw(d, note.as_deref());
                    }
                    None if events.is_none() => return progress.end(None, started, id),
                    None => {
                        let since = *gone_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= EVENT_GRACE {
                            return progress.end(None, started, id);
                        }
                    }
                }
            }
            Err(e) if transient(&e) => {
                let since = *outage_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= OUTAGE_PATIENCE {
                    progress.clear();
                    return Err(e);
                }
            }
            Err(e) => {
                progress.clear();
                return Err(e);
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            progress.clear();
            return Err(CliError::TimedOut {
                id: id.to_string(),
                after: timeout.unwrap_or_default(),
            });
        }
        let pause = match deadline {
            Some(d) => POLL.min(d.saturating_duration_since(Instant::now())),
            None => POLL,
        };
        match events.as_mut() {
            Some(ev) => {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    ended = ev.rx.recv() => match ended {
                        Some(ended) if ended.id == id => return progress.end(ended.failed, started, id),
                        Some(_) => {}
                        // The stream closed: carry on by the list alone.
                        None => events = None,
                    },
                }
            }
            None => tokio::time::sleep(pause).await,
        }
    }
}

fn transient(e: &CliError) -> bool {
    match e {
        CliError::Unreachable(_) => true,
        CliError::Api { status, .. } => is_server_error(*status),
        _ => false,
    }
}

/// Why the apps of deployment `d` wait, from the launch queue (`None` if they do not).
async fn queue_note(client: &Client, d: &Value) -> Option<String> {
    let queue = client.get("/v2/queue").await.ok()?.body;
    let apps = d["affectedApps"].as_array()?;
    let notes: Vec<String> = apps
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|app| {
            let h = held(queue_item(&queue, app)?)?;
            Some(if apps.len() > 1 {
                format!("{app} {}", h.describe())
            } else {
                h.describe()
            })
        })
        .collect();
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// The progress line on stderr: redrawn in place on a terminal, a new line per change
/// otherwise (logs of CI jobs).
struct Progress {
    tty: bool,
    short_id: String,
    last: String,
    drawn: bool,
}

impl Progress {
    fn new(id: &str) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            short_id: id.chars().take(8).collect(),
            last: String::new(),
            drawn: false,
        }
    }

    fn draw(&mut self, d: &Value, note: Option<&str>) {
        let total = d["totalSteps"].as_u64().unwrap_or(0);
        let current = d["currentStep"].as_u64().unwrap_or(0);
        let done = current.saturating_sub(1).min(total);
        let current_actions = match actions(&d["currentActions"]) {
            a if a == "-" => "starting".to_string(),
            a => a,
        };
        let mut text = format!("{done}/{total} steps  {current_actions}");
        if let Some(n) = note {
            text.push_str(&format!("  ({n})"));
        }
        if text == self.last {
            return;
        }
        self.last = text.clone();
        let mut err = std::io::stderr().lock();
        if self.tty {
            const BAR: usize = 20;
            let filled = if total == 0 {
                0
            } else {
                (done as usize * BAR) / total as usize
            };
            // The bar in green; autowrap is off while the line is written, so a line wider
            // than the terminal is cut at its edge instead of wrapping, and `\r` still finds
            // the start of the line to redraw.
            let _ = write!(
                err,
                "\r\x1b[2K\x1b[?7ldeployment {} [\x1b[32m{}{}\x1b[0m] {text}\x1b[?7h",
                self.short_id,
                "=".repeat(filled),
                " ".repeat(BAR - filled)
            );
            self.drawn = true;
        } else {
            let _ = writeln!(err, "deployment {}: {text}", self.short_id);
        }
        let _ = err.flush();
    }

    fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn end(&mut self, failed: Option<String>, started: Instant, id: &str) -> Result<(), CliError> {
        self.clear();
        match failed {
            None => {
                eprintln!(
                    "deployment {id} finished in {}",
                    human_duration(Duration::from_millis(started.elapsed().as_millis() as u64))
                );
                Ok(())
            }
            Some(reason) => Err(CliError::DeploymentFailed {
                id: id.to_string(),
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_events_are_recognised() {
        let ok = parse_event_line(
            "data: {\"eventType\":\"deployment_success\",\"id\":\"d1\",\"plan\":{\"id\":\"d1\"}}\r\n",
        );
        assert!(matches!(ok, Some(Ended { ref id, failed: None }) if id == "d1"));
        let failed = parse_event_line(
            "data: {\"eventType\":\"deployment_failed\",\"id\":\"d2\",\"reason\":\"The upgrade has been cancelled\"}",
        );
        assert!(
            matches!(failed, Some(Ended { ref id, failed: Some(ref r) }) if id == "d2" && r.contains("cancelled"))
        );
        assert!(parse_event_line("event: deployment_success\r\n").is_none());
        assert!(parse_event_line("data: {\"eventType\":\"status_update_event\"}").is_none());
    }
}
