//! Agents as the store records them, for every reader (gateway, health checkers, lb-sync): what
//! an agent offers and where its own API answers.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// Collection `agents`, key = agent id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    pub agent_id: String,
    pub hostname: String,
    /// `host:port` of the agent's gRPC API (sandbox files, command checks); empty if none.
    #[serde(default)]
    pub api_address: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    #[serde(default)]
    pub gpus: u32,
    /// Port ranges offered, inclusive.
    #[serde(default)]
    pub ports: Vec<(u32, u32)>,
    #[serde(default)]
    pub attributes: Vec<(String, String)>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    /// Attached to the current leader.
    pub connected: bool,
    pub registered_at: Timestamp,
}
