//! `stride group …`: `/v2/groups`.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::id_path;
use super::error::CliError;
use super::output::{count, fields, num, table, text};
use super::{deployment_note, force_query, read_json, Ctx, WaitArgs};

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Create a group (and its apps and subgroups) from a JSON definition.
    Add {
        /// The group definition: a file, or - for stdin.
        file: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List every group: its apps, subgroups and version.
    #[command(alias = "ls")]
    List,
    /// Show one group: its apps and subgroups.
    Show { id: String },
    /// Change a group from a JSON file (apps listed there are the group's whole app set).
    Update {
        id: String,
        /// The group update: a file, or - for stdin.
        file: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Multiply the instances of every app in the group (rounded up).
    Scale {
        id: String,
        factor: f64,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove a group and everything in it.
    #[command(alias = "rm")]
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

pub async fn run(ctx: &Ctx, command: GroupCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match command {
        GroupCommand::Add { file, wait } => {
            let def = read_json(&file)?;
            let id = def["id"].as_str().map(id_path).unwrap_or_default();
            ctx.deploy(
                &wait,
                c.call(Method::POST, "/v2/groups", &[], Some(&def)),
                |r| format!("Created group {id}{}", deployment_note(r)),
            )
            .await
        }
        GroupCommand::List => {
            let reply = c.get("/v2/groups").await?;
            ctx.print(&reply.body, || {
                let mut rows = Vec::new();
                flatten(&reply.body, &mut rows);
                table(&["ID", "APPS", "GROUPS", "DEPENDENCIES", "VERSION"], &rows)
            });
            Ok(())
        }
        GroupCommand::Show { id } => {
            let query: Vec<(&str, String)> = [
                "group.apps",
                "group.groups",
                "group.apps.counts",
                "group.apps.deployments",
            ]
            .iter()
            .map(|e| ("embed", e.to_string()))
            .collect();
            let reply = c
                .call(
                    Method::GET,
                    &format!("/v2/groups{}", id_path(&id)),
                    &query,
                    None,
                )
                .await?;
            ctx.print(&reply.body, || show_group(&reply.body));
            Ok(())
        }
        GroupCommand::Update {
            id,
            file,
            force,
            wait,
        } => {
            let body = read_json(&file)?;
            ctx.deploy(
                &wait,
                c.call(
                    Method::PUT,
                    &format!("/v2/groups{}", id_path(&id)),
                    &force_query(force),
                    Some(&body),
                ),
                |r| format!("Updated group {}{}", id_path(&id), deployment_note(r)),
            )
            .await
        }
        GroupCommand::Scale {
            id,
            factor,
            force,
            wait,
        } => {
            if !factor.is_finite() || factor < 0.0 {
                return Err(CliError::Usage(format!(
                    "the factor is a number of 0 or more, not {factor}"
                )));
            }
            ctx.deploy(
                &wait,
                c.call(
                    Method::PUT,
                    &format!("/v2/groups{}", id_path(&id)),
                    &force_query(force),
                    Some(&json!({ "scaleBy": factor })),
                ),
                |r| {
                    format!(
                        "Scaling group {} by {factor}{}",
                        id_path(&id),
                        deployment_note(r)
                    )
                },
            )
            .await
        }
        GroupCommand::Remove { id, force, wait } => {
            ctx.deploy(
                &wait,
                c.call(
                    Method::DELETE,
                    &format!("/v2/groups{}", id_path(&id)),
                    &force_query(force),
                    None,
                ),
                |r| format!("Removing group {}{}", id_path(&id), deployment_note(r)),
            )
            .await
        }
    }
}

/// One row per group of the tree under `g`, depth first.
fn flatten(g: &Value, rows: &mut Vec<Vec<String>>) {
    rows.push(vec![
        text(&g["id"]),
        len(&g["apps"]).to_string(),
        len(&g["groups"]).to_string(),
        joined(&g["dependencies"]),
        text(&g["version"]),
    ]);
    for sub in g["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        flatten(sub, rows);
    }
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

fn joined(v: &Value) -> String {
    match v.as_array() {
        Some(items) if !items.is_empty() => items.iter().map(text).collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

fn show_group(g: &Value) -> String {
    let subgroups: Vec<String> = g["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| text(&s["id"]))
        .collect();
    let head = fields(&[
        ("ID", text(&g["id"])),
        ("VERSION", text(&g["version"])),
        ("DEPENDENCIES", joined(&g["dependencies"])),
        (
            "GROUPS",
            if subgroups.is_empty() {
                "-".into()
            } else {
                subgroups.join(", ")
            },
        ),
    ]);
    let rows: Vec<Vec<String>> = g["apps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|a| {
            vec![
                text(&a["id"]),
                format!("{}/{}", count(&a["tasksRunning"]), count(&a["instances"])),
                num(&a["cpus"]),
                num(&a["mem"]),
                if a["deployments"].as_array().is_some_and(|d| !d.is_empty()) {
                    "Deploying".into()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    format!(
        "{head}\n\n{}",
        table(&["APP", "INSTANCES", "CPUS", "MEM", "DEPLOYMENT"], &rows)
    )
}
