//! Plain text output: aligned tables, numbers as people write them, and the one-word status of
//! an app. Pure functions, so the tests pin the format.

use serde_json::Value;

/// Columns left-aligned, two spaces apart, the last one not padded; one line per row.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.into_iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `key  value` lines, keys aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:width$}  {v}").trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON number as written: `3`, `0.1`, `-` when absent.
pub fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    format!("{}", f as i64)
                } else {
                    format!("{f}")
                }
            } else {
                n.to_string()
            }
        }
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A string field, or `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null | Value::String(_) => "-".into(),
        other => other.to_string(),
    }
}

pub fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The queue item (`GET /v2/queue`) of an app, if it has one.
pub fn queue_item<'a>(queue: &'a Value, app_id: &str) -> Option<&'a Value> {
    queue
        .get("queue")?
        .as_array()?
        .iter()
        .find(|q| q["app"]["id"].as_str() == Some(app_id))
}

/// What holds back an app's queued instances, read from its queue item.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// A launch backoff is running: seconds left.
    Delayed(i64),
    /// The last round of offers could not place it: the reasons that declined offers.
    Unplaceable(Vec<String>),
}

pub fn held(item: &Value) -> Option<Held> {
    let delay = &item["delay"];
    if delay["overdue"] == Value::Bool(false) {
        return Some(Held::Delayed(
            delay["timeLeftSeconds"].as_i64().unwrap_or(0),
        ));
    }
    let summary = &item["processedOffersSummary"];
    let processed = count(&summary["processedOffersCount"]);
    let unused = count(&summary["unusedOffersCount"]);
    // Every offer looked at was declined, or there was none to look at (no agent).
    if processed == 0 || unused >= processed {
        let reasons = summary["rejectSummaryLastOffers"]
            .as_array()
            .map(|r| {
                r.iter()
                    .filter(|s| count(&s["declined"]) > 0)
                    .filter_map(|s| s["reason"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        return Some(Held::Unplaceable(reasons));
    }
    None
}

impl Held {
    /// A few words for a progress line or a table cell.
    pub fn describe(&self) -> String {
        match self {
            Held::Delayed(s) => format!("delayed {s}s by backoff"),
            Held::Unplaceable(r) if r.is_empty() => "waiting: no agent can take it".into(),
            Held::Unplaceable(r) => format!("waiting: {}", r.join(", ")),
        }
    }
}

/// `Running`, `Deploying`, `Suspended`, `Waiting` (cannot be placed) or `Delayed` (backoff), as
/// Marathon's UI shows them; `queue_item` is the app's entry in `/v2/queue`.
pub fn app_status(app: &Value, queue_item: Option<&Value>) -> &'static str {
    match queue_item.and_then(held) {
        Some(Held::Delayed(_)) => return "Delayed",
        Some(Held::Unplaceable(_)) => return "Waiting",
        None => {}
    }
    let deploying = app["deployments"].as_array().is_some_and(|d| !d.is_empty());
    if deploying {
        "Deploying"
    } else if count(&app["instances"]) == 0 && count(&app["tasksRunning"]) == 0 {
        "Suspended"
    } else {
        "Running"
    }
}

/// `healthy/unhealthy`, or `-` for an app without health checks.
pub fn health(app: &Value) -> String {
    if app["healthChecks"]
        .as_array()
        .is_some_and(|h| !h.is_empty())
    {
        format!(
            "{}/{}",
            count(&app["tasksHealthy"]),
            count(&app["tasksUnhealthy"])
        )
    } else {
        "-".into()
    }
}

/// A task's health: `healthy`, `unhealthy`, or `-` without check results.
pub fn task_health(task: &Value) -> String {
    match task["healthCheckResults"].as_array() {
        Some(r) if !r.is_empty() => {
            if r.iter().all(|c| c["alive"] == Value::Bool(true)) {
                "healthy".into()
            } else {
                "unhealthy".into()
            }
        }
        _ => "-".into(),
    }
}

/// A list of numbers or strings, comma-separated (`-` when empty).
pub fn list(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(num).collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

/// `ScaleApplication /web, StopApplication /db`.
pub fn actions(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|a| {
                let target = a["app"]
                    .as_str()
                    .or_else(|| a["pod"].as_str())
                    .unwrap_or("");
                format!("{} {target}", a["action"].as_str().unwrap_or("?"))
                    .trim_end()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_do_not_pad_the_last_column() {
        let t = table(
            &["ID", "INSTANCES", "STATUS"],
            &[
                vec!["/web".into(), "3/3".into(), "Running".into()],
                vec!["/a-long-name".into(), "0/1".into(), "Waiting".into()],
            ],
        );
        assert_eq!(
            t,
            "ID            INSTANCES  STATUS\n\
             /web          3/3        Running\n\
             /a-long-name  0/1        Waiting"
        );
    }

    #[test]
    fn numbers_read_as_written() {
        assert_eq!(num(&json!(3)), "3");
        assert_eq!(num(&json!(0.1)), "0.1");
        assert_eq!(num(&json!(64.0)), "64");
        assert_eq!(num(&Value::Null), "-");
    }

    fn queued(overdue: bool, left: i64, processed: u64, unused: u64) -> Value {
        json!({
            "app": {"id": "/web"},
            "count": 1,
            "delay": {"timeLeftSeconds": left, "overdue": overdue},
            "processedOffersSummary": {
                "processedOffersCount": processed,
                "unusedOffersCount": unused,
                "rejectSummaryLastOffers": [
                    {"reason": "UnfulfilledRole", "declined": 0, "processed": processed},
                    {"reason": "InsufficientCpus", "declined": unused, "processed": processed},
                ],
            },
        })
    }

    #[test]
    fn status_follows_the_queue_then_the_deployments() {
        let app =
            json!({"id": "/web", "instances": 2, "tasksRunning": 1, "deployments": [{"id": "d"}]});
        assert_eq!(app_status(&app, None), "Deploying");
        assert_eq!(app_status(&app, Some(&queued(false, 3, 1, 0))), "Delayed");
        assert_eq!(app_status(&app, Some(&queued(true, 0, 1, 1))), "Waiting");
        assert_eq!(app_status(&app, Some(&queued(true, 0, 0, 0))), "Waiting");
        assert_eq!(
            app_status(&app, Some(&queued(true, 0, 2, 1))),
            "Deploying",
            "one agent of two could take it"
        );
        let idle = json!({"instances": 0, "tasksRunning": 0, "deployments": []});
        assert_eq!(app_status(&idle, None), "Suspended");
        let up = json!({"instances": 2, "tasksRunning": 2, "deployments": []});
        assert_eq!(app_status(&up, None), "Running");
    }

    #[test]
    fn held_names_the_reasons() {
        assert_eq!(
            held(&queued(true, 0, 1, 1)),
            Some(Held::Unplaceable(vec!["InsufficientCpus".into()]))
        );
        assert_eq!(
            held(&queued(true, 0, 1, 1)).map(|h| h.describe()),
            Some("waiting: InsufficientCpus".into())
        );
        assert_eq!(held(&queued(false, 4, 1, 0)), Some(Held::Delayed(4)));
        assert_eq!(held(&queued(true, 0, 1, 0)), None);
    }

    #[test]
    fn actions_list() {
        assert_eq!(
            actions(
                &json!([{"action": "ScaleApplication", "app": "/web"}, {"action": "StopApplication", "app": "/db"}])
            ),
            "ScaleApplication /web, StopApplication /db"
        );
        assert_eq!(actions(&json!([])), "-");
    }
}
