//! `stride deployment …`, `queue`, `leader`, `info` and `ping`.

use std::time::Duration;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::client::id_path;
use super::error::CliError;
use super::output::{actions, count, fields, held, table, text, Held};
use super::{deployment_note, parse_timeout, say, wait, Ctx, WaitArgs};

#[derive(Subcommand, Debug)]
pub enum DeploymentCommand {
    /// List running deployments.
    #[command(alias = "ls")]
    List,
    /// Follow a deployment until it ends (exit 0 done, 5 failed or rolled back, 6 timed out).
    Watch {
        id: String,
        /// How long to watch: 30s, 5m, 1h; 0 watches for ever.
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_timeout)]
        timeout: Duration,
    },
    /// Roll a deployment back: a new deployment restores what it changed.
    Rollback {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop a deployment where it is, with no rollback (old and new tasks may stay side by side).
    Stop { id: String },
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: Option<QueueCommand>,
}

#[derive(Subcommand, Debug)]
enum QueueCommand {
    /// End the launch backoff of an app, so it launches again at once.
    Reset { app_id: String },
}

#[derive(Args, Debug)]
pub struct LeaderArgs {
    #[command(subcommand)]
    command: Option<LeaderCommand>,
}

#[derive(Subcommand, Debug)]
enum LeaderCommand {
    /// Make the leading scheduler step down; a standby takes over.
    Abdicate,
}

pub async fn deployment(ctx: &Ctx, command: DeploymentCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match command {
        DeploymentCommand::List => {
            let reply = c.get("/v2/deployments").await?;
            ctx.print(&reply.body, || {
                let rows: Vec<Vec<String>> = reply
                    .body
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|d| {
                        vec![
                            text(&d["id"]),
                            text(&d["version"]),
                            d["affectedApps"]
                                .as_array()
                                .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
                                .filter(|s| !s.is_empty())
                                .unwrap_or_else(|| "-".into()),
                            format!("{}/{}", count(&d["currentStep"]), count(&d["totalSteps"])),
                            actions(&d["currentActions"]),
                        ]
                    })
                    .collect();
                table(&["ID", "VERSION", "AFFECTED", "STEP", "ACTIONS"], &rows)
            });
            Ok(())
        }
        DeploymentCommand::Watch { id, timeout } => {
            // Open the stream first: a deployment that ends between the check and the stream
            // would otherwise be missed.
            let events = wait::open_events(c).await;
            let list = c.get("/v2/deployments").await?;
            let known = list
                .body
                .as_array()
                .is_some_and(|ds| ds.iter().any(|d| d["id"].as_str() == Some(id.as_str())));
            if !known {
                return Err(CliError::Api {
                    status: 404,
                    body: serde_json::json!({
                        "message": format!("DeploymentPlan {id} does not exist")
                    }),
                    text: String::new(),
                });
            }
            let bound = (!timeout.is_zero()).then_some(timeout);
            wait::follow(c, &id, events, bound, std::time::Instant::now()).await
        }
        DeploymentCommand::Rollback { id, wait } => {
            ctx.deploy(
                &wait,
                c.call(Method::DELETE, &format!("/v2/deployments/{id}"), &[], None),
                |r| format!("Rolling back deployment {id}{}", deployment_note(r)),
            )
            .await
        }
        DeploymentCommand::Stop { id } => {
            let reply = c
                .call(
                    Method::DELETE,
                    &format!("/v2/deployments/{id}"),
                    &[("force", "true".into())],
                    None,
                )
                .await?;
            ctx.print(&reply.body, || format!("Stopped deployment {id}"));
            Ok(())
        }
    }
}

pub async fn queue(ctx: &Ctx, args: QueueArgs) -> Result<(), CliError> {
    let c = &ctx.client;
    match args.command {
        None => {
            let reply = c.get("/v2/queue").await?;
            ctx.print(&reply.body, || queue_table(&reply.body));
            Ok(())
        }
        Some(QueueCommand::Reset { app_id }) => {
            let reply = c
                .call(
                    Method::DELETE,
                    &format!("/v2/queue{}/delay", id_path(&app_id)),
                    &[],
                    None,
                )
                .await?;
            ctx.print(&reply.body, || {
                format!("Reset the launch delay of {}", id_path(&app_id))
            });
            Ok(())
        }
    }
}

fn queue_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["queue"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|q| {
            let id = q["app"]["id"]
                .as_str()
                .or_else(|| q["pod"]["id"].as_str())
                .unwrap_or("-");
            let delay = &q["delay"];
            let (delay_text, status, reasons) = match held(q) {
                Some(Held::Delayed(s)) => (format!("{s}s"), "Delayed", "-".to_string()),
                Some(Held::Unplaceable(r)) => (
                    "-".into(),
                    "Waiting",
                    if r.is_empty() {
                        "-".into()
                    } else {
                        r.join(",")
                    },
                ),
                None => (
                    if delay["overdue"] == Value::Bool(false) {
                        format!("{}s", count(&delay["timeLeftSeconds"]))
                    } else {
                        "-".into()
                    },
                    "Queued",
                    "-".into(),
                ),
            };
            vec![
                id.to_string(),
                count(&q["count"]).to_string(),
                delay_text,
                status.to_string(),
                text(&q["since"]),
                reasons,
            ]
        })
        .collect();
    table(
        &["APP", "COUNT", "DELAY", "STATUS", "SINCE", "DECLINED BY"],
        &rows,
    )
}

pub async fn leader(ctx: &Ctx, args: LeaderArgs) -> Result<(), CliError> {
    let c = &ctx.client;
    match args.command {
        None => {
            let reply = c.get("/v2/leader").await?;
            ctx.print(&reply.body, || text(&reply.body["leader"]));
        }
        Some(LeaderCommand::Abdicate) => {
            let reply = c.call(Method::DELETE, "/v2/leader", &[], None).await?;
            ctx.print(&reply.body, || text(&reply.body["message"]));
        }
    }
    Ok(())
}

pub async fn info(ctx: &Ctx) -> Result<(), CliError> {
    let reply = ctx.client.get("/v2/info").await?;
    let b = &reply.body;
    ctx.print(b, || {
        fields(&[
            ("NAME", text(&b["name"])),
            ("VERSION", text(&b["version"])),
            ("STRIDE VERSION", text(&b["stride_version"])),
            ("ELECTED", text(&b["elected"])),
            ("LEADER", text(&b["leader"])),
            ("FRAMEWORK ID", text(&b["frameworkId"])),
            ("HTTP PORT", text(&b["http_config"]["http_port"])),
        ])
    });
    Ok(())
}

pub async fn ping(ctx: &Ctx) -> Result<(), CliError> {
    let reply = ctx.client.get("/ping").await?;
    if ctx.json {
        let body = if reply.body.is_null() {
            Value::String(reply.text.trim().to_string())
        } else {
            reply.body.clone()
        };
        ctx.print(&body, String::new);
    } else {
        let t = reply.text.trim().trim_matches('"');
        say(if t.is_empty() { "pong" } else { t });
    }
    Ok(())
}
