//! Leader election: campaign for the store's lease, keep renewing it, and run a [`LeaderActor`]
//! for exactly as long as the lease is ours.
//!
//! A term ends when a renewal says the lease is gone, when renewals keep failing for long enough
//! that the lease may have expired (we step down *before* it can expire, so two leaders never
//! act at once), when the persister reports a fenced write, or on abdication.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use stride_core::Timestamp;
use stride_store::{Candidate, Lease, StateStore};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::leader::{LeaderActor, Sessions};
use crate::metrics as m;
use crate::standby::{load_for_term, Mirror, Standby};
use crate::state::{LeaderState, Tuning};

/// What this scheduler is right now.
#[derive(Clone)]
pub enum Role {
    Follower,
    Leader { addr: Addr<LeaderActor>, epoch: u64 },
}

/// Timing of the lease.
#[derive(Clone, Debug)]
pub struct Timing {
    pub lease_ttl: Duration,
    pub renew_interval: Duration,
    pub campaign_interval: Duration,
}

struct Term {
    lease: Lease,
    renewals: Arc<Renewals>,
    leader: Option<Addr<LeaderActor>>,
}

/// What the task that keeps a term's lease alive has seen. The task runs on the runtime's worker
/// threads, apart from the actors, so a leader busy with a long pass still renews in time;
/// fencing in the store keeps a leader that lost its lease from writing either way.
struct Renewals {
    /// When the last successful renewal started.
    last: parking_lot::Mutex<Instant>,
    /// A renewal found the lease held by another term.
    taken: std::sync::atomic::AtomicBool,
    /// The term is over: the task stops.
    over: std::sync::atomic::AtomicBool,
}

impl Renewals {
    fn new(acquired_at: Instant) -> Arc<Self> {
        Arc::new(Self {
            last: parking_lot::Mutex::new(acquired_at),
            taken: Default::default(),
            over: Default::default(),
        })
    }

    fn since_last(&self) -> Duration {
        self.last.lock().elapsed()
    }
}

/// Renews `lease` every `timing.renew_interval` until the term is over or the lease is taken.
async fn keep_lease(
    store: Arc<dyn StateStore>,
    lease: Lease,
    timing: Timing,
    renewals: Arc<Renewals>,
) {
    use std::sync::atomic::Ordering;
    let mut every = tokio::time::interval(timing.renew_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        if renewals.over.load(Ordering::Relaxed) {
            return;
        }
        let started = Instant::now();
        // A renewal that has not answered within half the lease is worth nothing.
        match tokio::time::timeout(timing.lease_ttl / 2, store.renew(&lease, timing.lease_ttl))
            .await
        {
            Ok(Ok(true)) => *renewals.last.lock() = started,
            Ok(Ok(false)) => {
                renewals.taken.store(true, Ordering::Relaxed);
                return;
            }
            Ok(Err(e)) => warn!(error = %e, "lease renewal failed"),
            Err(_) => warn!("lease renewal timed out"),
        }
    }
}

pub struct Elector {
    store: Arc<dyn StateStore>,
    candidate: Candidate,
    timing: Timing,
    tuning: Tuning,
    role: watch::Sender<Role>,
    /// The state a new term loads, kept current while standing by; `None` to read everything
    /// from the store at every election instead.
    standby: Option<Standby>,
    term: Option<Term>,
    acquiring: bool,
    /// No campaigning before this (after abdicating, to let another scheduler win).
    hold_off_until: Option<Instant>,
}

impl Elector {
    pub fn new(
        store: Arc<dyn StateStore>,
        candidate: Candidate,
        timing: Timing,
        tuning: Tuning,
        role: watch::Sender<Role>,
        standby: Option<Standby>,
    ) -> Self {
        Self {
            store,
            candidate,
            timing,
            tuning,
            role,
            standby,
            term: None,
            acquiring: false,
            hold_off_until: None,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        match &mut self.term {
            Some(term) => {
                if term
                    .renewals
                    .taken
                    .load(std::sync::atomic::Ordering::Relaxed)
                {
                    warn!(
                        epoch = term.lease.epoch(),
                        "the lease was taken; stepping down"
                    );
                    self.step_down(false);
                    return;
                }
                // Step down while the lease is surely still ours if renewals keep failing.
                let margin = self.timing.lease_ttl / 4;
                if term.renewals.since_last() + margin >= self.timing.lease_ttl {
                    warn!(
                        epoch = term.lease.epoch(),
                        "could not renew the lease in time; stepping down"
                    );
                    self.step_down(false);
                }
            }
            None => {
                if self.acquiring || self.hold_off_until.is_some_and(|t| Instant::now() < t) {
                    return;
                }
                self.acquiring = true;
                let store = self.store.clone();
                let candidate = self.candidate.clone();
                let ttl = self.timing.lease_ttl;
                let started = Instant::now();
                ctx.spawn(
                    async move { store.try_acquire(&candidate, ttl).await }
                        .into_actor(self)
                        .map(move |result, act, ctx| {
                            act.acquiring = false;
                            match result {
                                Ok(Some(lease)) => act.elected(lease, started, ctx),
                                Ok(None) => {}
                                Err(e) => warn!(error = %e, "cannot reach the store to campaign"),
                            }
                        }),
                );
            }
        }
    }

    fn elected(&mut self, lease: Lease, acquired_at: Instant, ctx: &mut Context<Self>) {
        info!(epoch = lease.epoch(), id = %self.candidate.scheduler_id, "elected; loading state");
        metrics::counter!(m::ELECTIONS_WON).increment(1);
        let renewals = Renewals::new(acquired_at);
        tokio::spawn(keep_lease(
            self.store.clone(),
            lease.clone(),
            self.timing.clone(),
            renewals.clone(),
        ));
        self.term = Some(Term {
            lease: lease.clone(),
            renewals,
            leader: None,
        });
        let store = self.store.clone();
        let tuning = self.tuning.clone();
        let standby = self.standby.clone();
        if let Some(s) = &standby {
            // Here rather than in the load, so that a term that ends first resumes it after.
            s.pause();
        }
        let loading = Instant::now();
        ctx.spawn(
            async move { load_for_term(standby.as_ref(), store.as_ref(), tuning).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let still_ours = act.term.as_ref().is_some_and(|t| t.lease == lease);
                    if !still_ours {
                        return;
                    }
                    match result {
                        Ok((state, loaded)) => {
                            info!(
                                epoch = lease.epoch(),
                                from = %loaded.source,
                                took_ms = loading.elapsed().as_millis() as u64,
                                read_ms = loaded.read.as_millis() as u64,
                                build_ms = loaded.build.as_millis() as u64,
                                built_ahead_ms =
                                    loaded.built_ahead.map(|d| d.as_millis() as u64),
                                keys_read = loaded.keys,
                                instances = loaded.instances,
                                "state loaded"
                            );
                            let (fenced_tx, mut fenced_rx) = mpsc::unbounded_channel();
                            let sessions: Sessions = Default::default();
                            let leader = LeaderActor::new(
                                state,
                                lease.clone(),
                                act.store.clone(),
                                sessions,
                                fenced_tx,
                            )
                            .start();
                            if let Some(t) = act.term.as_mut() {
                                t.leader = Some(leader.clone());
                            }
                            let epoch = lease.epoch();
                            let _ = act.role.send(Role::Leader {
                                addr: leader,
                                epoch,
                            });
                            metrics::gauge!(m::LEADER).set(1.0);
                            ctx.spawn(async move { fenced_rx.recv().await }.into_actor(act).map(
                                move |got, act, _| {
                                    if got.is_some()
                                        && act
                                            .term
                                            .as_ref()
                                            .is_some_and(|t| t.lease.epoch() == epoch)
                                    {
                                        act.step_down(false);
                                    }
                                },
                            ));
                        }
                        Err(e) => {
                            error!(error = %e, "could not load state; giving up leadership");
                            act.step_down(true);
                        }
                    }
                }),
        );
    }

    /// Ends the term. With `release`, the lease is given back at once so a standby can take
    /// over without waiting for it to expire.
    fn step_down(&mut self, release: bool) {
        let Some(term) = self.term.take() else { return };
        term.renewals
            .over
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(leader) = term.leader {
            // Stop synchronously from the leader's point of view: no message after this one.
            leader.do_send(StopLeader);
        }
        let _ = self.role.send(Role::Follower);
        metrics::gauge!(m::LEADER).set(0.0);
        if let Some(s) = &self.standby {
            s.resume();
        }
        if release {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.release(&term.lease).await {
                    warn!(error = %e, "could not release the lease; it expires on its own");
                }
            });
        }
    }
}

impl Actor for Elector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        metrics::gauge!(m::LEADER).set(0.0);
        let every = self
            .timing
            .campaign_interval
            .min(self.timing.renew_interval / 2);
        ctx.run_interval(every, |act, ctx| act.tick(ctx));
        self.tick(ctx);
    }
}

/// Tells a leader its term is over.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopLeader;

impl Handler<StopLeader> for LeaderActor {
    type Result = ();
    fn handle(&mut self, _: StopLeader, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Give up leadership; campaign again only after a while, so another scheduler wins.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct Abdicate;

impl Handler<Abdicate> for Elector {
    type Result = bool;
    fn handle(&mut self, _: Abdicate, _: &mut Context<Self>) -> bool {
        if self.term.is_none() {
            return false;
        }
        info!("abdicating");
        self.hold_off_until = Some(Instant::now() + self.timing.lease_ttl * 3);
        self.step_down(true);
        true
    }
}

/// Step down and release the lease (shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Resign;

impl Handler<Resign> for Elector {
    type Result = ();
    fn handle(&mut self, _: Resign, ctx: &mut Context<Self>) {
        self.hold_off_until = Some(Instant::now() + Duration::from_secs(3600));
        if let Some(term) = self.term.take() {
            term.renewals
                .over
                .store(true, std::sync::atomic::Ordering::Relaxed);
            if let Some(leader) = term.leader {
                leader.do_send(StopLeader);
            }
            let _ = self.role.send(Role::Follower);
            let store = self.store.clone();
            ctx.wait(
                async move {
                    let _ = store.release(&term.lease).await;
                }
                .into_actor(self),
            );
        }
    }
}

pub use crate::standby::LoadError;

/// Reads everything a new leader needs from the store: a cold load, without a mirror.
pub async fn load_state(store: &dyn StateStore, tuning: Tuning) -> Result<LeaderState, LoadError> {
    Ok(Mirror::read_unversioned(store)
        .await?
        .into_state(tuning, Timestamp::now()))
}
