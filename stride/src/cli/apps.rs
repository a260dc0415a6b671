//! `stride app …`: `/v2/apps` and the tasks of an app.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::id_path;
use super::error::CliError;
use super::output::{
    app_status, count, fields, health, list, num, queue_item, table, task_health, text,
};
use super::{deployment_note, force_query, read_json, say, update, Ctx, WaitArgs};

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// Create an app from a JSON definition (POST /v2/apps).
    Add {
        /// The app definition: a file, or - for stdin.
        file: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// List apps: instances running/wanted, health, resources, status.
    #[command(alias = "ls")]
    List,
    /// Show one app and its tasks.
    Show {
        /// The app id: /web, web, /prod/web.
        id: String,
    },
    /// Change an app: a JSON file (or -) of the fields to change, or key=value pairs
    /// (instances=3 cmd="sleep 9" cpus=0.5 mem=64 env.FOO=bar).
    Update {
        id: String,
        /// One file (or -), or key=value pairs.
        #[arg(required = true, num_args = 1.., value_name = "FILE|KEY=VALUE")]
        changes: Vec<String>,
        /// Cancel a deployment that holds the app, instead of failing with exit code 4.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Set the number of instances.
    Scale {
        id: String,
        instances: u32,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Replace every task, rolling as the app's upgradeStrategy says.
    Restart {
        id: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Remove an app and kill its tasks.
    #[command(alias = "rm")]
    Remove {
        id: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Kill tasks of an app: all of them, those on --host, or the task ids given.
    Kill {
        id: String,
        /// Tasks to kill (all of the app's when none is given).
        task_ids: Vec<String>,
        /// Lower `instances` by the number killed (makes a deployment).
        #[arg(long, conflicts_with = "wipe")]
        scale: bool,
        /// Forget the killed instances, so fresh ones replace them.
        #[arg(long)]
        wipe: bool,
        /// Only the tasks on this agent host.
        #[arg(long, conflicts_with = "task_ids")]
        host: Option<String>,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// The stored versions of an app, newest first.
    Versions { id: String },
    /// The tasks of an app.
    Tasks { id: String },
}

pub async fn run(ctx: &Ctx, command: AppCommand) -> Result<(), CliError> {
    let c = &ctx.client;
    match command {
        AppCommand::Add { file, wait } => {
            let def = read_json(&file)?;
            ctx.deploy(
                &wait,
                c.call(Method::POST, "/v2/apps", &[], Some(&def)),
                |r| format!("Created app {}{}", text(&r.body["id"]), deployment_note(r)),
            )
            .await
        }
        AppCommand::List => {
            let apps = c.get("/v2/apps").await?;
            if ctx.json {
                ctx.print(&apps.body, String::new);
                return Ok(());
            }
            // The queue only sharpens the status; without it, apps still list.
            let queue = c.get("/v2/queue").await.map(|r| r.body).unwrap_or_default();
            let rows: Vec<Vec<String>> = apps.body["apps"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    let id = a["id"].as_str().unwrap_or("");
                    vec![
                        id.to_string(),
                        format!("{}/{}", count(&a["tasksRunning"]), count(&a["instances"])),
                        health(a),
                        num(&a["cpus"]),
                        num(&a["mem"]),
                        app_status(a, queue_item(&queue, id)).to_string(),
                    ]
                })
                .collect();
            say(&table(
                &["ID", "INSTANCES", "HEALTH", "CPUS", "MEM", "STATUS"],
                &rows,
            ));
            Ok(())
        }
        AppCommand::Show { id } => {
            let reply = c.get(&format!("/v2/apps{}", id_path(&id))).await?;
            if ctx.json {
                ctx.print(&reply.body, String::new);
                return Ok(());
            }
            let queue = c.get("/v2/queue").await.map(|r| r.body).unwrap_or_default();
            say(&show_app(&reply.body["app"], &queue));
            Ok(())
        }
        AppCommand::Update {
            id,
            changes,
            force,
            wait,
        } => {
            let path = format!("/v2/apps{}", id_path(&id));
            let body = if update::are_assignments(&changes) {
                let current = c.get(&path).await?;
                update::patch(&current.body["app"], &changes).map_err(CliError::Usage)?
            } else {
                read_json(&changes[0])?
            };
            ctx.deploy(
                &wait,
                c.call(Method::PUT, &path, &force_query(force), Some(&body)),
                |r| {
                    let verb = if r.status == 201 {
                        "Created"
                    } else {
                        "Updated"
                    };
                    format!("{verb} app {}{}", id_path(&id), deployment_note(r))
                },
            )
            .await
        }
        AppCommand::Scale {
            id,
            instances,
            force,
            wait,
        } => {
            let path = format!("/v2/apps{}", id_path(&id));
            // PUT creates a missing app; scaling one that does not exist is a mistake (exit 3).
            c.get(&path).await?;
            ctx.deploy(
                &wait,
                c.call(
                    Method::PUT,
                    &path,
                    &force_query(force),
                    Some(&json!({ "instances": instances })),
                ),
                |r| {
                    format!(
                        "Scaling {} to {instances}{}",
                        id_path(&id),
                        deployment_note(r)
                    )
                },
            )
            .await
        }
        AppCommand::Restart { id, force, wait } => {
            let path = format!("/v2/apps{}/restart", id_path(&id));
            ctx.deploy(
                &wait,
                c.call(Method::POST, &path, &force_query(force), None),
                |r| format!("Restarting {}{}", id_path(&id), deployment_note(r)),
            )
            .await
        }
        AppCommand::Remove { id, wait } => {
            let path = format!("/v2/apps{}", id_path(&id));
            ctx.deploy(&wait, c.call(Method::DELETE, &path, &[], None), |r| {
                format!("Removing {}{}", id_path(&id), deployment_note(r))
            })
            .await
        }
        AppCommand::Kill {
            id,
            task_ids,
            scale,
            wipe,
            host,
            force,
            wait,
        } => {
            if wait.wait && !scale {
                return Err(CliError::Usage(
                    "--wait needs --scale: a plain kill makes no deployment".into(),
                ));
            }
            let mut query = force_query(force);
            if scale {
                query.push(("scale", "true".into()));
            }
            if wipe {
                query.push(("wipe", "true".into()));
            }
            let app = id_path(&id);
            // One task: the app's own path, which says 404 for a task it does not have. More:
            // one call for all, so --scale makes one deployment.
            let (method, path, body) = match task_ids.as_slice() {
                [] => {
                    if let Some(h) = host {
                        query.push(("host", h));
                    }
                    (Method::DELETE, format!("/v2/apps{app}/tasks"), None)
                }
                [one] => (Method::DELETE, format!("/v2/apps{app}/tasks/{one}"), None),
                many => (
                    Method::POST,
                    "/v2/tasks/delete".to_string(),
                    Some(json!({ "ids": many })),
                ),
            };
            let send = c.call(method, &path, &query, body.as_ref());
            ctx.deploy(&wait, send, |r| killed(r, &app)).await
        }
        AppCommand::Versions { id } => {
            let reply = c.get(&format!("/v2/apps{}/versions", id_path(&id))).await?;
            ctx.print(&reply.body, || {
                reply.body["versions"]
                    .as_array()
                    .map(|v| v.iter().map(text).collect::<Vec<_>>().join("\n"))
                    .unwrap_or_default()
            });
            Ok(())
        }
        AppCommand::Tasks { id } => {
            let reply = c.get(&format!("/v2/apps{}/tasks", id_path(&id))).await?;
            ctx.print(&reply.body, || tasks_table(&reply.body["tasks"]));
            Ok(())
        }
    }
}

/// What a kill did: the tasks it killed, or the deployment that scales down.
fn killed(r: &super::client::Reply, app: &str) -> String {
    if let Some(d) = &r.deployment_id {
        return format!("Killing tasks of {app} and scaling it down (deployment {d})");
    }
    let tasks: Vec<Value> = match (&r.body["tasks"], &r.body["task"]) {
        (Value::Array(t), _) => t.clone(),
        (_, t) if t.is_object() => vec![t.clone()],
        _ => Vec::new(),
    };
    let mut out = format!("Killed {} task(s) of {app}", tasks.len());
    for t in &tasks {
        out.push_str(&format!("\n{}", text(&t["id"])));
    }
    out
}

fn tasks_table(tasks: &Value) -> String {
    let rows: Vec<Vec<String>> = tasks
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            vec![
                text(&t["id"]),
                text(&t["host"]),
                list(&t["ports"]),
                text(&t["state"]),
                text(&t["startedAt"]),
                task_health(t),
                text(&t["version"]),
            ]
        })
        .collect();
    table(
        &[
            "ID", "HOST", "PORTS", "STATE", "STARTED", "HEALTH", "VERSION",
        ],
        &rows,
    )
}

fn show_app(app: &Value, queue: &Value) -> String {
    let id = app["id"].as_str().unwrap_or("");
    let command = match (&app["cmd"], &app["args"]) {
        (Value::String(c), _) => c.clone(),
        (_, Value::Array(a)) => a.iter().map(text).collect::<Vec<_>>().join(" "),
        _ => "-".into(),
    };
    let item = queue_item(queue, id);
    let mut status = app_status(app, item).to_string();
    if let Some(h) = item.and_then(super::output::held) {
        status.push_str(&format!(" ({})", h.describe()));
    }
    let deployments = app["deployments"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| text(&x["id"]))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into());
    let mut pairs = vec![
        ("ID", id.to_string()),
        ("CMD", command),
        (
            "INSTANCES",
            format!(
                "{} running / {} wanted ({} staged)",
                count(&app["tasksRunning"]),
                count(&app["instances"]),
                count(&app["tasksStaged"])
            ),
        ),
        ("HEALTH", health(app)),
        ("CPUS", num(&app["cpus"])),
        ("MEM", num(&app["mem"])),
        ("DISK", num(&app["disk"])),
        ("VERSION", text(&app["version"])),
        ("STATUS", status),
        ("DEPLOYMENTS", deployments),
    ];
    let failure = &app["lastTaskFailure"];
    if failure.is_object() {
        pairs.push((
            "LAST FAILURE",
            format!(
                "{} {} at {}: {}",
                text(&failure["taskId"]),
                text(&failure["state"]),
                text(&failure["timestamp"]),
                text(&failure["message"])
            ),
        ));
    }
    format!("{}\n\n{}", fields(&pairs), tasks_table(&app["tasks"]))
}
