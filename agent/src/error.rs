//! Why the agent could not run. Only start-up can fail: once running, a lost scheduler is retried
//! and a failed task is a status, not an error of the agent.

pub use crate::config::ConfigError;
pub use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("agent state: {0}")]
    State(#[from] StateError),
    #[error("cannot detect the node's {what}: {message}")]
    Detect { what: &'static str, message: String },
    #[error("work directory {path}: {source}")]
    WorkDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}
