//! Epoch fencing: the agent obeys only the newest leader it has heard of.
//!
//! Every leader election bumps an epoch, and the leader stamps its messages with it. The agent
//! keeps the highest epoch seen — on disk, so that a restarted agent cannot be fooled by a
//! deposed leader either — and refuses commands stamped with a lower one.

use tracing::error;

use crate::state::StateDir;

pub(crate) struct EpochFence {
    highest: u64,
    state: StateDir,
}

impl EpochFence {
    pub fn new(state: StateDir, highest: u64) -> Self {
        Self { highest, state }
    }

    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Records `epoch` as seen, raising (and persisting) the highest if it is above it.
    pub async fn observe(&mut self, epoch: u64) {
        if epoch > self.highest {
            self.highest = epoch;
            if let Err(e) = self.state.save_epoch(epoch).await {
                // The fence still holds in memory; only a restart would forget it.
                error!(epoch, error = %e, "cannot persist the leader epoch");
            }
        }
    }

    /// Whether a command stamped with `epoch` may be obeyed; an admitted epoch is observed.
    pub async fn admit(&mut self, epoch: u64) -> bool {
        if epoch < self.highest {
            return false;
        }
        self.observe(epoch).await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lower_epochs_are_refused_and_the_highest_persists() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let state = StateDir::open(dir.path()).await?;
        let mut fence = EpochFence::new(state.clone(), state.load_epoch().await?);
        assert!(fence.admit(0).await);
        fence.observe(5).await;
        assert!(!fence.admit(4).await);
        assert!(fence.admit(5).await);
        assert!(fence.admit(6).await);
        assert_eq!(fence.highest(), 6);
        assert_eq!(state.load_epoch().await?, 6);
        Ok(())
    }
}
