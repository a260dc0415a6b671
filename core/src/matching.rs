//! Offer matching: which agent gets which pending instance, with which host ports.
//!
//! A pure function over the agents' free resources ("offers"), the pending launches and the
//! instances already placed. It never over-commits cpus, mem, disk or ports, honours every
//! constraint (reference §6), and gives the same answer for the same input: candidates are ranked
//! by a [`Score`] whose field order is the policy, with the agent id as the last tie-break.
//!
//! Constraints are checked through [`Constraints`], which counts an app's placed instances by
//! each constraint field's value once per round and keeps the counts as instances are placed,
//! so an offer costs O(constraints) to check however many instances the app has;
//! [`constraint_accepts`] is the plain definition it is tested against.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use regex::Regex;

use crate::app::App;
use crate::instance::InstanceId;
use crate::path::PathId;

/// An agent's free resources at the time of matching.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    pub agent_id: String,
    pub hostname: String,
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: u32,
    /// Free port ranges, inclusive, sorted.
    pub ports: Vec<(u32, u32)>,
    pub attributes: Vec<(String, String)>,
    pub region: Option<String>,
    pub zone: Option<String>,
}

impl Offer {
    /// The value a constraint field reads on this agent (reference §6.2).
    pub fn field(&self, field: &str) -> Option<&str> {
        match field {
            "hostname" | "@hostname" => Some(&self.hostname),
            "@region" => self.region.as_deref(),
            "@zone" => self.zone.as_deref(),
            name => self
                .attributes
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }
}

/// An instance waiting for a place.
#[derive(Clone, Debug)]
pub struct Pending<'a> {
    pub instance_id: InstanceId,
    pub app: &'a App,
}

/// Where an instance of the same app already runs: its agent's field values.
#[derive(Clone, Debug, PartialEq)]
pub struct PlacedInstance {
    pub agent_id: String,
    pub hostname: String,
    pub attributes: Vec<(String, String)>,
}

impl PlacedInstance {
    fn field(&self, field: &str) -> Option<&str> {
        match field {
            "hostname" | "@hostname" => Some(&self.hostname),
            name => self
                .attributes
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
        }
    }

    fn of_offer(o: &Offer) -> Self {
        let mut attributes = o.attributes.clone();
        if let Some(r) = &o.region {
            attributes.push(("@region".into(), r.clone()));
        }
        if let Some(z) = &o.zone {
            attributes.push(("@zone".into(), z.clone()));
        }
        Self {
            agent_id: o.agent_id.clone(),
            hostname: o.hostname.clone(),
            attributes,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub instance_id: InstanceId,
    pub app_id: PathId,
    pub agent_id: String,
    pub hostname: String,
    pub host_ports: Vec<u32>,
    pub attributes: Vec<(String, String)>,
}

/// Why no agent took an instance, in Marathon's funnel order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reject {
    UnfulfilledRole,
    UnfulfilledConstraint,
    InsufficientCpus,
    InsufficientMemory,
    InsufficientDisk,
    InsufficientGpus,
    InsufficientPorts,
}

impl Reject {
    pub fn name(self) -> &'static str {
        match self {
            Reject::UnfulfilledRole => "UnfulfilledRole",
            Reject::UnfulfilledConstraint => "UnfulfilledConstraint",
            Reject::InsufficientCpus => "InsufficientCpus",
            Reject::InsufficientMemory => "InsufficientMemory",
            Reject::InsufficientDisk => "InsufficientDisk",
            Reject::InsufficientGpus => "InsufficientGpus",
            Reject::InsufficientPorts => "InsufficientPorts",
        }
    }
}

/// The result of one matching round.
#[derive(Debug, Default)]
pub struct MatchResult {
    pub assignments: Vec<Assignment>,
    /// For each instance left waiting, why each agent refused it (counted per reason).
    pub unmatched: Vec<(InstanceId, BTreeMap<Reject, usize>)>,
}

fn whole_match(re: &str, value: &str) -> bool {
    Regex::new(&anchored(re)).is_ok_and(|r| r.is_match(value))
}

/// `LIKE` and `UNLIKE` match the whole value, as Java's `String.matches` does.
fn anchored(re: &str) -> String {
    format!("^(?:{re})$")
}

fn format_scalar(v: &str) -> String {
    match v.parse::<f64>() {
        Ok(x) if v.chars().all(|c| c.is_ascii_digit() || c == '.') => {
            let s = format!("{:.3}", x);
            let s = s.trim_end_matches('0').trim_end_matches('.');
            s.to_string()
        }
        _ => v.to_string(),
    }
}

/// Does `offer` satisfy one constraint, given the app's placed instances (reference §6.3)?
///
/// The definition, written as the reference states it: it walks `placed` (and compiles a
/// `LIKE` pattern) on every call. Matching goes through [`Constraints`] instead, which gives the
/// same answers (the tests compare the two) at a cost that does not grow with `placed`.
pub fn constraint_accepts(c: &[String], offer: &Offer, placed: &[PlacedInstance]) -> bool {
    let (Some(field), Some(op)) = (c.first(), c.get(1)) else {
        return false;
    };
    let value = c.get(2).map(String::as_str).unwrap_or("");
    let Some(offer_value) = offer.field(field) else {
        return op == "UNLIKE";
    };
    let values = || placed.iter().filter_map(|p| p.field(field));
    match op.as_str() {
        "UNIQUE" => values().all(|v| v != offer_value),
        "CLUSTER" => {
            if !value.is_empty() {
                offer_value == value
            } else {
                values().next().is_none_or(|v| v == offer_value)
            }
        }
        "LIKE" => whole_match(value, offer_value),
        "UNLIKE" => !whole_match(value, offer_value),
        "MAX_PER" => {
            let n: usize = value.parse().unwrap_or(0);
            values().filter(|v| *v == offer_value).count() < n
        }
        "IS" => format_scalar(offer_value) == format_scalar(value),
        "GROUP_BY" => {
            let n: usize = if value == "inf" {
                usize::MAX
            } else {
                value.parse().unwrap_or(0)
            };
            let mut groups: HashMap<&str, usize> = HashMap::new();
            for v in values() {
                *groups.entry(v).or_default() += 1;
            }
            match groups.get(offer_value) {
                None => true,
                Some(count) => {
                    let min = groups.values().copied().min().unwrap_or(0);
                    groups.len() >= n && *count == min
                }
            }
        }
        _ => false,
    }
}

/// One constraint's operator and value, parsed once.
#[derive(Debug)]
enum Rule {
    /// Too few fields or an unknown operator: no offer passes.
    Never,
    Unique,
    /// `CLUSTER` without a value: the value of the first placed instance that has the field.
    ClusterFirst,
    /// `CLUSTER` with a value.
    ClusterOn(String),
    MaxPer(usize),
    GroupBy(usize),
    /// `None` when the pattern does not compile: then no value matches it.
    Like(Option<Regex>),
    Unlike(Option<Regex>),
    /// The value as [`format_scalar`] renders it.
    Is(String),
}

impl Rule {
    fn parse(c: &[String]) -> Rule {
        let (Some(_), Some(op)) = (c.first(), c.get(1)) else {
            return Rule::Never;
        };
        let value = c.get(2).map(String::as_str).unwrap_or("");
        let pattern = || Regex::new(&anchored(value)).ok();
        match op.as_str() {
            "UNIQUE" => Rule::Unique,
            "CLUSTER" if value.is_empty() => Rule::ClusterFirst,
            "CLUSTER" => Rule::ClusterOn(value.to_string()),
            "MAX_PER" => Rule::MaxPer(value.parse().unwrap_or(0)),
            "GROUP_BY" if value == "inf" => Rule::GroupBy(usize::MAX),
            "GROUP_BY" => Rule::GroupBy(value.parse().unwrap_or(0)),
            "LIKE" => Rule::Like(pattern()),
            "UNLIKE" => Rule::Unlike(pattern()),
            "IS" => Rule::Is(format_scalar(value)),
            _ => Rule::Never,
        }
    }

    /// The part of the decision that depends on the offer's value alone.
    fn admits(&self, v: &str) -> bool {
        match self {
            Rule::Never => false,
            Rule::ClusterOn(want) => v == want,
            Rule::Like(re) => re.as_ref().is_some_and(|r| r.is_match(v)),
            Rule::Unlike(re) => !re.as_ref().is_some_and(|r| r.is_match(v)),
            Rule::Is(want) => format_scalar(v) == *want,
            Rule::Unique | Rule::ClusterFirst | Rule::MaxPer(_) | Rule::GroupBy(_) => true,
        }
    }

    /// Only `UNLIKE` passes an offer that lacks the field.
    fn admits_missing(&self) -> bool {
        matches!(self, Rule::Unlike(_))
    }

    fn reads_placed(&self) -> bool {
        matches!(
            self,
            Rule::Unique | Rule::ClusterFirst | Rule::MaxPer(_) | Rule::GroupBy(_)
        )
    }
}

/// One constraint, with the app's placed instances counted by the constraint field's value.
#[derive(Debug)]
struct Check {
    field: String,
    rule: Rule,
    /// Every value seen so far, on a placed instance or an offer, numbered in order of sight;
    /// the vectors below are indexed by that number.
    ids: HashMap<String, usize>,
    /// Whether the rule admits the value on its own (so a pattern runs once per value).
    admitted: Vec<bool>,
    /// Placed instances with the value.
    counts: Vec<usize>,
    /// The value of the first placed instance that has the field (`CLUSTER` without a value).
    first: Option<usize>,
    /// How many values have each count above zero: `GROUP_BY`'s groups, and its smallest group.
    by_count: BTreeMap<usize, usize>,
    groups: usize,
    min_count: usize,
}

impl Check {
    fn new(c: &[String]) -> Self {
        Self {
            field: c.first().cloned().unwrap_or_default(),
            rule: Rule::parse(c),
            ids: HashMap::new(),
            admitted: Vec::new(),
            counts: Vec::new(),
            first: None,
            by_count: BTreeMap::new(),
            groups: 0,
            min_count: 0,
        }
    }

    fn intern(&mut self, v: &str) -> usize {
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        let id = self.counts.len();
        self.ids.insert(v.to_string(), id);
        self.admitted.push(self.rule.admits(v));
        self.counts.push(0);
        id
    }

    fn record(&mut self, p: &PlacedInstance) {
        if !self.rule.reads_placed() {
            return;
        }
        let Some(v) = p.field(&self.field) else {
            return;
        };
        let id = self.intern(v);
        self.first.get_or_insert(id);
        let before = self.counts[id];
        if before == 0 {
            self.groups += 1;
        } else if let Some(n) = self.by_count.get_mut(&before) {
            *n -= 1;
            if *n == 0 {
                self.by_count.remove(&before);
            }
        }
        self.counts[id] = before + 1;
        *self.by_count.entry(before + 1).or_default() += 1;
        self.min_count = self.by_count.keys().next().copied().unwrap_or(0);
    }

    /// The decision for a value the rule admits on its own, placed on `count` instances;
    /// `id` is `None` for a value never seen.
    fn decide(&self, count: usize, id: Option<usize>) -> bool {
        match self.rule {
            Rule::Unique => count == 0,
            Rule::ClusterFirst => self.first.is_none_or(|f| Some(f) == id),
            Rule::MaxPer(n) => count < n,
            Rule::GroupBy(n) => count == 0 || (self.groups >= n && count == self.min_count),
            Rule::Never => false,
            Rule::ClusterOn(_) | Rule::Like(_) | Rule::Unlike(_) | Rule::Is(_) => true,
        }
    }

    fn accepts(&self, offer: &Offer) -> bool {
        let Some(v) = offer.field(&self.field) else {
            return self.rule.admits_missing();
        };
        match self.ids.get(v) {
            Some(&id) => self.accepts_id(Some(id)),
            None => self.rule.admits(v) && self.decide(0, None),
        }
    }

    fn accepts_id(&self, id: Option<usize>) -> bool {
        match id {
            None => self.rule.admits_missing(),
            Some(id) => self.admitted[id] && self.decide(self.counts[id], Some(id)),
        }
    }
}

/// An app's constraints, with its placed instances counted per constraint by field value, so
/// that checking an offer costs O(constraints) whatever the number placed, and placing one
/// more instance costs the same. Answers exactly as [`constraint_accepts`] does for every
/// constraint together.
#[derive(Debug)]
pub struct Constraints {
    checks: Vec<Check>,
}

/// An offer's value for each constraint of one [`Constraints`], numbered by
/// [`Constraints::values_of`]; only meaningful to the `Constraints` that made it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OfferValues(Vec<Option<usize>>);

impl Constraints {
    /// Counts `placed` (the app's placed instances, reference §6.3) for `constraints`.
    pub fn new(constraints: &[Vec<String>], placed: &[PlacedInstance]) -> Self {
        let mut s = Self {
            checks: constraints.iter().map(|c| Check::new(c)).collect(),
        };
        for p in placed {
            s.record(p);
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Counts one more placed instance.
    pub fn record(&mut self, p: &PlacedInstance) {
        for c in &mut self.checks {
            c.record(p);
        }
    }

    /// Does `offer` satisfy every constraint?
    pub fn accepts(&self, offer: &Offer) -> bool {
        self.checks.iter().all(|c| c.accepts(offer))
    }

    /// The offer's values, looked up once: an agent's attributes do not change while it is
    /// matched, so [`Constraints::accepts_values`] can then check it without reading them.
    pub fn values_of(&mut self, offer: &Offer) -> OfferValues {
        OfferValues(
            self.checks
                .iter_mut()
                .map(|c| offer.field(&c.field).map(|v| c.intern(v)))
                .collect(),
        )
    }

    /// [`Constraints::accepts`] for an offer whose values were taken by
    /// [`Constraints::values_of`] of this same `Constraints`.
    pub fn accepts_values(&self, values: &OfferValues) -> bool {
        debug_assert_eq!(values.0.len(), self.checks.len());
        self.checks
            .iter()
            .zip(&values.0)
            .all(|(c, id)| c.accepts_id(*id))
    }
}

/// Takes `count` ports from the free ranges, honouring fixed ones. Returns `None` if they do
/// not fit; on success the ranges no longer contain the ports taken.
fn take_ports(ranges: &mut Vec<(u32, u32)>, wanted: &[Option<u32>]) -> Option<Vec<u32>> {
    let mut free = ranges.clone();
    let mut taken = Vec::with_capacity(wanted.len());
    let remove = |free: &mut Vec<(u32, u32)>, p: u32| -> bool {
        let Some(ix) = free.iter().position(|(b, e)| *b <= p && p <= *e) else {
            return false;
        };
        let (b, e) = free[ix];
        free.remove(ix);
        if p < e {
            free.insert(ix, (p + 1, e));
        }
        if b < p {
            free.insert(ix, (b, p - 1));
        }
        true
    };
    for w in wanted.iter().filter_map(|w| *w) {
        if !remove(&mut free, w) {
            return None;
        }
    }
    for w in wanted {
        match w {
            Some(p) => taken.push(*p),
            None => {
                let p = free.first().map(|(b, _)| *b)?;
                remove(&mut free, p);
                taken.push(p);
            }
        }
    }
    *ranges = free;
    Some(taken)
}

/// Why this agent ranks where it does; compared field by field, so the order is the policy.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Score<'a> {
    /// Fewer instances of the same app on the agent spreads an app across agents.
    same_app_instances: usize,
    /// Less of the agent's cpu left unused after placing (in milli-cpus) packs the rest.
    cpus_left_milli: i64,
    agent: &'a str,
}

fn free_port_count(ranges: &[(u32, u32)]) -> usize {
    ranges.iter().map(|(b, e)| (e - b + 1) as usize).sum()
}

/// What one app asks of every offer, worked out once per app and matching round.
struct Ask<'a> {
    app: &'a App,
    /// Whether the app's accepted roles admit its role: the same for every offer.
    role_ok: bool,
    wanted_ports: Vec<Option<u32>>,
    fixed_ports: bool,
    constraints: Constraints,
}

impl<'a> Ask<'a> {
    fn new(app: &'a App, placed: &[PlacedInstance]) -> Self {
        let wanted_ports = app.required_host_ports();
        Self {
            app,
            role_ok: app.accepted_resource_roles.as_ref().is_none_or(|roles| {
                roles
                    .iter()
                    .any(|r| r == "*" || Some(r) == app.role.as_ref())
            }),
            fixed_ports: wanted_ports.iter().any(Option::is_some),
            wanted_ports,
            constraints: Constraints::new(&app.constraints, placed),
        }
    }

    /// The first step of the funnel that refuses `o` (whose values are `values`), if any.
    fn rejects(&self, o: &Offer, values: &OfferValues) -> Option<Reject> {
        let app = self.app;
        if !self.role_ok {
            return Some(Reject::UnfulfilledRole);
        }
        if !self.constraints.accepts_values(values) {
            return Some(Reject::UnfulfilledConstraint);
        }
        const EPS: f64 = 1e-9;
        if app.cpus > o.cpus + EPS {
            return Some(Reject::InsufficientCpus);
        }
        if app.mem > o.mem + EPS {
            return Some(Reject::InsufficientMemory);
        }
        if app.disk > o.disk + EPS {
            return Some(Reject::InsufficientDisk);
        }
        if app.gpus.max(0) as u32 > o.gpus {
            return Some(Reject::InsufficientGpus);
        }
        let fits = if self.fixed_ports {
            let mut ports = o.ports.clone();
            take_ports(&mut ports, &self.wanted_ports).is_some()
        } else {
            free_port_count(&o.ports) >= self.wanted_ports.len()
        };
        if !fits {
            return Some(Reject::InsufficientPorts);
        }
        None
    }

    fn reasons(&self, offers: &[Offer], values: &[OfferValues]) -> BTreeMap<Reject, usize> {
        let mut reasons = BTreeMap::new();
        for (o, v) in offers.iter().zip(values) {
            if let Some(r) = self.rejects(o, v) {
                *reasons.entry(r).or_default() += 1;
            }
        }
        reasons
    }
}

/// Places one instance on offer `ix`: takes its resources and records where it went.
fn place(
    offers: &mut [Offer],
    ix: usize,
    p: &Pending<'_>,
    ask: &mut Ask<'_>,
    app_placed: &mut Vec<PlacedInstance>,
    result: &mut MatchResult,
) -> bool {
    let o = &mut offers[ix];
    let Some(host_ports) = take_ports(&mut o.ports, &p.app.required_host_ports()) else {
        return false;
    };
    o.cpus -= p.app.cpus;
    o.mem -= p.app.mem;
    o.disk -= p.app.disk;
    o.gpus -= p.app.gpus.max(0) as u32;
    let placed_instance = PlacedInstance::of_offer(o);
    result.assignments.push(Assignment {
        instance_id: p.instance_id.clone(),
        app_id: p.app.id.clone(),
        agent_id: o.agent_id.clone(),
        hostname: o.hostname.clone(),
        host_ports,
        attributes: placed_instance.attributes.clone(),
    });
    ask.constraints.record(&placed_instance);
    app_placed.push(placed_instance);
    true
}

fn score(o: &Offer, app: &App, same_app: usize) -> (usize, i64) {
    (same_app, ((o.cpus - app.cpus) * 1000.0).round() as i64)
}

/// The offers in agent id order, numbered without copying their ids: offers of one agent share
/// a slot, and an offer's rank is its place in that order (equal ids in offer order).
struct AgentOrder {
    /// Offer indexes sorted by agent id.
    by_id: Vec<usize>,
    slot: Vec<usize>,
    rank: Vec<usize>,
    count: usize,
}

impl AgentOrder {
    fn new(offers: &[Offer]) -> Self {
        let mut by_id: Vec<usize> = (0..offers.len()).collect();
        // The leader hands its offers over sorted already.
        if !offers.windows(2).all(|w| w[0].agent_id <= w[1].agent_id) {
            by_id.sort_by(|&a, &b| offers[a].agent_id.cmp(&offers[b].agent_id));
        }
        let mut slot = vec![0; offers.len()];
        let mut rank = vec![0; offers.len()];
        let mut count = 0;
        for (k, &ix) in by_id.iter().enumerate() {
            rank[ix] = k;
            match k.checked_sub(1).map(|prev| by_id[prev]) {
                Some(prev) if offers[prev].agent_id == offers[ix].agent_id => slot[ix] = slot[prev],
                _ => {
                    slot[ix] = count;
                    count += 1;
                }
            }
        }
        Self {
            by_id,
            slot,
            rank,
            count,
        }
    }

    fn slot_of(&self, offers: &[Offer], agent: &str) -> Option<usize> {
        self.by_id
            .binary_search_by(|&ix| offers[ix].agent_id.as_str().cmp(agent))
            .ok()
            .map(|k| self.slot[self.by_id[k]])
    }
}

/// Matches `pending` against `offers`, app by app in the order the apps first appear (and in
/// order within an app). `placed` holds each app's placed instances (of its current
/// configuration), and is extended as instances are assigned.
///
/// Each instance goes to the feasible agent with the lowest [`Score`]. For apps without
/// constraints or fixed host ports the agents wait in a heap keyed by that score, so placing k
/// instances over A agents costs O(A + k log A) instead of O(k × A); the answer is the same,
/// since placing an instance only changes the score of the agent that took it. Other apps scan
/// every agent for every instance, each check O(constraints) through [`Constraints`]: with c
/// constraints and p instances placed, O(p × c + k × A × c), where checking each agent against
/// the placed instances cost O(k × A × p).
pub fn match_offers(
    offers: &mut [Offer],
    pending: &[Pending<'_>],
    placed: &mut HashMap<PathId, Vec<PlacedInstance>>,
) -> MatchResult {
    let mut result = MatchResult::default();
    let mut order: Vec<&PathId> = Vec::new();
    let mut by_app: HashMap<&PathId, Vec<&Pending<'_>>> = HashMap::new();
    for p in pending {
        by_app
            .entry(&p.app.id)
            .or_insert_with(|| {
                order.push(&p.app.id);
                Vec::new()
            })
            .push(p);
    }
    // Agents numbered once, so an app's instances are counted per agent by index, not by name.
    let agents = AgentOrder::new(offers);
    for app_id in order {
        let list = &by_app[app_id];
        let app = list[0].app;
        let app_placed = placed.entry(app.id.clone()).or_default();
        let mut same = vec![0usize; agents.count];
        for x in app_placed.iter() {
            if let Some(s) = agents.slot_of(offers, &x.agent_id) {
                same[s] += 1;
            }
        }
        let slots = &agents.slot;
        let mut ask = Ask::new(app, app_placed);
        let values: Vec<OfferValues> = offers
            .iter()
            .map(|o| ask.constraints.values_of(o))
            .collect();
        // Once no agent takes an instance, nothing has changed for the next one: every further
        // instance waits for the same reasons.
        let mut exhausted: Option<BTreeMap<Reject, usize>> = None;
        if ask.constraints.is_empty() && !ask.fixed_ports {
            // Ties go to the lower agent id: its rank in id order stands for it.
            let mut heap: BinaryHeap<Reverse<(usize, i64, usize, usize)>> = BinaryHeap::new();
            for (ix, o) in offers.iter().enumerate() {
                if ask.rejects(o, &values[ix]).is_none() {
                    let (a, b) = score(o, app, same[slots[ix]]);
                    heap.push(Reverse((a, b, agents.rank[ix], ix)));
                }
            }
            for p in list {
                let Some(Reverse((_, _, rank, ix))) = heap.pop() else {
                    let reasons = exhausted.get_or_insert_with(|| ask.reasons(offers, &values));
                    result
                        .unmatched
                        .push((p.instance_id.clone(), reasons.clone()));
                    continue;
                };
                if !place(offers, ix, p, &mut ask, app_placed, &mut result) {
                    result
                        .unmatched
                        .push((p.instance_id.clone(), ask.reasons(offers, &values)));
                    continue;
                }
                let n = &mut same[slots[ix]];
                *n += 1;
                if ask.rejects(&offers[ix], &values[ix]).is_none() {
                    let (a, b) = score(&offers[ix], app, *n);
                    heap.push(Reverse((a, b, rank, ix)));
                }
            }
            continue;
        }
        for p in list {
            if let Some(reasons) = &exhausted {
                result
                    .unmatched
                    .push((p.instance_id.clone(), reasons.clone()));
                continue;
            }
            let mut best: Option<(Score<'_>, usize)> = None;
            for (ix, o) in offers.iter().enumerate() {
                if ask.rejects(o, &values[ix]).is_some() {
                    continue;
                }
                let (same_app_instances, cpus_left_milli) = score(o, app, same[slots[ix]]);
                let s = Score {
                    same_app_instances,
                    cpus_left_milli,
                    agent: &o.agent_id,
                };
                if best.as_ref().is_none_or(|(b, _)| s < *b) {
                    best = Some((s, ix));
                }
            }
            match best.map(|(_, ix)| ix) {
                Some(ix) if place(offers, ix, p, &mut ask, app_placed, &mut result) => {
                    same[slots[ix]] += 1;
                }
                Some(_) => result
                    .unmatched
                    .push((p.instance_id.clone(), ask.reasons(offers, &values))),
                None => {
                    let reasons = ask.reasons(offers, &values);
                    result
                        .unmatched
                        .push((p.instance_id.clone(), reasons.clone()));
                    exhausted = Some(reasons);
                }
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn offer(id: &str, cpus: f64, mem: f64, rack: &str) -> Offer {
        Offer {
            agent_id: id.into(),
            hostname: format!("{id}.local"),
            cpus,
            mem,
            disk: 1000.0,
            gpus: 0,
            ports: vec![(31000, 31009)],
            attributes: vec![("rack_id".into(), rack.into())],
            region: None,
            zone: None,
        }
    }

    fn app(cpus: f64, mem: f64, constraints: &[&[&str]]) -> App {
        let mut a = App::new("/a");
        a.cpus = cpus;
        a.mem = mem;
        a.constraints = constraints
            .iter()
            .map(|c| c.iter().map(|s| s.to_string()).collect())
            .collect();
        a
    }

    #[test]
    fn unique_hostname_spreads_and_stops() {
        let a = app(0.1, 10.0, &[&["hostname", "UNIQUE"]]);
        let mut offers = vec![
            offer("a1", 4.0, 1000.0, "r1"),
            offer("a2", 4.0, 1000.0, "r2"),
        ];
        let pending: Vec<Pending<'_>> = (0..3)
            .map(|_| Pending {
                instance_id: InstanceId::new(&a.id),
                app: &a,
            })
            .collect();
        let r = match_offers(&mut offers, &pending, &mut HashMap::new());
        assert_eq!(r.assignments.len(), 2);
        assert_ne!(r.assignments[0].agent_id, r.assignments[1].agent_id);
        assert_eq!(r.unmatched.len(), 1);
        assert_eq!(
            r.unmatched[0].1.get(&Reject::UnfulfilledConstraint),
            Some(&2)
        );
    }

    #[test]
    fn group_by_fills_the_smallest_group() {
        let placed = vec![
            PlacedInstance {
                agent_id: "a1".into(),
                hostname: "h1".into(),
                attributes: vec![("rack_id".into(), "r1".into())],
            },
            PlacedInstance {
                agent_id: "a2".into(),
                hostname: "h2".into(),
                attributes: vec![("rack_id".into(), "r2".into())],
            },
            PlacedInstance {
                agent_id: "a3".into(),
                hostname: "h3".into(),
                attributes: vec![("rack_id".into(), "r1".into())],
            },
        ];
        let c: Vec<String> = vec!["rack_id".into(), "GROUP_BY".into()];
        assert!(!constraint_accepts(
            &c,
            &offer("x", 1.0, 1.0, "r1"),
            &placed
        ));
        assert!(constraint_accepts(&c, &offer("x", 1.0, 1.0, "r2"), &placed));
        assert!(constraint_accepts(&c, &offer("x", 1.0, 1.0, "r3"), &placed));
        let c3: Vec<String> = vec!["rack_id".into(), "GROUP_BY".into(), "3".into()];
        assert!(!constraint_accepts(
            &c3,
            &offer("x", 1.0, 1.0, "r2"),
            &placed
        ));
    }

    #[test]
    fn like_is_anchored_and_missing_attributes_only_pass_unlike() {
        let o = offer("a1", 1.0, 1.0, "rack-12");
        assert!(constraint_accepts(
            &["rack_id".into(), "LIKE".into(), "rack-[0-9]+".into()],
            &o,
            &[]
        ));
        assert!(!constraint_accepts(
            &["rack_id".into(), "LIKE".into(), "rack".into()],
            &o,
            &[]
        ));
        assert!(constraint_accepts(
            &["zone".into(), "UNLIKE".into(), "x".into()],
            &o,
            &[]
        ));
        assert!(!constraint_accepts(
            &["zone".into(), "LIKE".into(), ".*".into()],
            &o,
            &[]
        ));
    }

    /// Matching as the reference states it: every agent checked for every instance with
    /// [`constraint_accepts`] over the app's placed instances, the lowest score taken.
    fn plain_match(
        offers: &mut [Offer],
        pending: &[Pending<'_>],
        placed: &mut HashMap<PathId, Vec<PlacedInstance>>,
    ) -> MatchResult {
        let mut result = MatchResult::default();
        let mut order: Vec<&PathId> = Vec::new();
        for p in pending {
            if !order.contains(&&p.app.id) {
                order.push(&p.app.id);
            }
        }
        for app_id in order {
            let list: Vec<&Pending<'_>> = pending.iter().filter(|p| &p.app.id == app_id).collect();
            let app = list[0].app;
            let app_placed = placed.entry(app.id.clone()).or_default();
            let wanted = app.required_host_ports();
            let refuses = |o: &Offer, app_placed: &[PlacedInstance]| -> Option<Reject> {
                if let Some(roles) = &app.accepted_resource_roles {
                    if !roles
                        .iter()
                        .any(|r| r == "*" || Some(r) == app.role.as_ref())
                    {
                        return Some(Reject::UnfulfilledRole);
                    }
                }
                if !app
                    .constraints
                    .iter()
                    .all(|c| constraint_accepts(c, o, app_placed))
                {
                    return Some(Reject::UnfulfilledConstraint);
                }
                if app.cpus > o.cpus + 1e-9 {
                    return Some(Reject::InsufficientCpus);
                }
                if app.mem > o.mem + 1e-9 {
                    return Some(Reject::InsufficientMemory);
                }
                if app.disk > o.disk + 1e-9 {
                    return Some(Reject::InsufficientDisk);
                }
                if app.gpus.max(0) as u32 > o.gpus {
                    return Some(Reject::InsufficientGpus);
                }
                let mut ports = o.ports.clone();
                match take_ports(&mut ports, &wanted) {
                    Some(_) => None,
                    None => Some(Reject::InsufficientPorts),
                }
            };
            for p in list {
                let best = offers
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| refuses(o, app_placed).is_none())
                    .min_by_key(|(_, o)| {
                        let same = app_placed
                            .iter()
                            .filter(|x| x.agent_id == o.agent_id)
                            .count();
                        let left = ((o.cpus - app.cpus) * 1000.0).round() as i64;
                        (same, left, o.agent_id.clone())
                    })
                    .map(|(ix, _)| ix);
                let Some(ix) = best else {
                    let mut reasons = BTreeMap::new();
                    for o in offers.iter() {
                        if let Some(r) = refuses(o, app_placed) {
                            *reasons.entry(r).or_default() += 1;
                        }
                    }
                    result.unmatched.push((p.instance_id.clone(), reasons));
                    continue;
                };
                let o = &mut offers[ix];
                let host_ports = take_ports(&mut o.ports, &wanted).expect("checked");
                o.cpus -= app.cpus;
                o.mem -= app.mem;
                o.disk -= app.disk;
                o.gpus -= app.gpus.max(0) as u32;
                let x = PlacedInstance::of_offer(o);
                result.assignments.push(Assignment {
                    instance_id: p.instance_id.clone(),
                    app_id: app.id.clone(),
                    agent_id: o.agent_id.clone(),
                    hostname: o.hostname.clone(),
                    host_ports,
                    attributes: x.attributes.clone(),
                });
                app_placed.push(x);
            }
        }
        result
    }

    const FIELDS: &[&str] = &[
        "hostname",
        "@hostname",
        "rack_id",
        "@region",
        "@zone",
        "gen",
        "absent",
    ];
    const OPS: &[&str] = &[
        "UNIQUE", "CLUSTER", "GROUP_BY", "LIKE", "UNLIKE", "MAX_PER", "IS", "NEAR",
    ];
    const VALUES: &[&str] = &[
        "", "0", "1", "2", "3", "inf", "-1", "r1", "r[0-2]", "h.*", "(", "1.0", "0.80", "2.5", "eu",
    ];

    /// A constraint as a client may write it, malformed ones included.
    fn arb_constraint() -> impl Strategy<Value = Vec<String>> {
        (
            0..FIELDS.len(),
            0..OPS.len(),
            prop::option::of(0..VALUES.len()),
            0u8..20,
        )
            .prop_map(|(f, op, v, shape)| {
                let mut c = vec![FIELDS[f].to_string(), OPS[op].to_string()];
                if let Some(v) = v {
                    c.push(VALUES[v].to_string());
                }
                match shape {
                    0 => c.truncate(1),
                    1 => c.clear(),
                    _ => {}
                }
                c
            })
    }

    /// An agent's field values, drawn from small pools so that values repeat.
    fn arb_agent() -> impl Strategy<
        Value = (
            usize,
            Option<usize>,
            Option<usize>,
            Option<usize>,
            Option<usize>,
        ),
    > {
        (
            0usize..5,
            prop::option::weighted(0.8, 0usize..5),
            prop::option::of(0usize..2),
            prop::option::of(0usize..3),
            prop::option::of(0usize..4),
        )
    }

    const GENS: &[&str] = &["1", "1.0", "0.8", "2.5"];

    fn agent_offer(
        i: usize,
        (h, rack, region, zone, g): (
            usize,
            Option<usize>,
            Option<usize>,
            Option<usize>,
            Option<usize>,
        ),
    ) -> Offer {
        let mut attributes = Vec::new();
        if let Some(r) = rack {
            attributes.push(("rack_id".to_string(), format!("r{r}")));
        }
        if let Some(g) = g {
            attributes.push(("gen".to_string(), GENS[g].to_string()));
        }
        Offer {
            agent_id: format!("agent-{i}"),
            hostname: format!("h{h}"),
            cpus: 4.0,
            mem: 4096.0,
            disk: 1000.0,
            gpus: 0,
            ports: vec![(31000, 31003)],
            attributes,
            region: region.map(|r| ["eu", "us"][r].to_string()),
            zone: zone.map(|z| format!("z{z}")),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Counting by value answers as the definition does, for offers checked before or
        /// after the rest of the placed instances are counted.
        #[test]
        fn constraints_agree_with_the_definition(
            cs in prop::collection::vec(arb_constraint(), 0..4),
            agents in prop::collection::vec(arb_agent(), 1..8),
            placed_on in prop::collection::vec(arb_agent(), 0..12),
            split in 0usize..12,
        ) {
            let offers: Vec<Offer> = agents.into_iter().enumerate().map(|(i, a)| agent_offer(i, a)).collect();
            let placed: Vec<PlacedInstance> = placed_on
                .into_iter()
                .enumerate()
                .map(|(i, a)| PlacedInstance::of_offer(&agent_offer(100 + i, a)))
                .collect();
            let split = split.min(placed.len());
            let whole = Constraints::new(&cs, &placed);
            let mut grown = Constraints::new(&cs, &placed[..split]);
            let values: Vec<OfferValues> = offers.iter().map(|o| grown.values_of(o)).collect();
            for p in &placed[split..] {
                grown.record(p);
            }
            for (o, v) in offers.iter().zip(&values) {
                let want = cs.iter().all(|c| constraint_accepts(c, o, &placed));
                prop_assert_eq!(whole.accepts(o), want, "{:?} on {:?}", cs, o);
                prop_assert_eq!(grown.accepts(o), want, "{:?} on {:?}", cs, o);
                prop_assert_eq!(grown.accepts_values(v), want, "{:?} on {:?}", cs, o);
                for c in &cs {
                    let one = Constraints::new(std::slice::from_ref(c), &placed);
                    prop_assert_eq!(one.accepts(o), constraint_accepts(c, o, &placed), "{:?} on {:?}", c, o);
                }
            }
        }

        /// The same assignments, refusals, remaining resources and placed instances as
        /// checking every agent against every placed instance.
        #[test]
        fn match_offers_agrees_with_a_plain_scan(
            agents in prop::collection::vec((arb_agent(), 0.2f64..2.0, 0u32..3), 1..8),
            apps in prop::collection::vec((
                prop::collection::vec(arb_constraint(), 0..3),
                0.1f64..1.0,
                0usize..3,
                prop::option::of(31000u32..31004),
                0u8..4,
                1usize..7,
            ), 1..4),
            placed_on in prop::collection::vec((0usize..4, 0usize..8), 0..10),
        ) {
            let offers: Vec<Offer> = agents.into_iter().enumerate().map(|(i, (a, cpus, ranges))| {
                let mut o = agent_offer(i, a);
                o.cpus = cpus;
                o.ports = (0..ranges).map(|k| (31000 + 2 * k, 31001 + 2 * k)).collect();
                o
            }).collect();
            let app_defs: Vec<App> = apps.iter().enumerate().map(|(i, (cs, cpus, ports, fixed, roles, _))| {
                let mut a = App::new(&format!("/app-{i}"));
                a.cpus = *cpus;
                a.mem = 16.0;
                a.constraints = cs.clone();
                a.require_ports = fixed.is_some();
                a.port_definitions = Some((0..*ports).map(|k| crate::app::PortDefinition {
                    port: fixed.map_or(0, |f| i64::from(f) + k as i64), protocol: "tcp".into(), name: None, labels: Default::default() }).collect());
                a.accepted_resource_roles = match roles {
                    0 => Some(vec!["*".into()]),
                    1 => Some(vec!["prod".into()]),
                    _ => None,
                };
                a
            }).collect();
            let mut placed: HashMap<PathId, Vec<PlacedInstance>> = HashMap::new();
            for (app, on) in placed_on {
                if let (Some(a), Some(o)) = (app_defs.get(app), offers.get(on)) {
                    placed.entry(a.id.clone()).or_default().push(PlacedInstance::of_offer(o));
                }
            }
            let pending: Vec<Pending<'_>> = app_defs.iter().zip(&apps).flat_map(|(a, (.., n))| {
                (0..*n).map(move |k| Pending { instance_id: InstanceId(format!("{}-{k}", a.id.safe_path())), app: a })
            }).collect();
            let (mut o1, mut p1) = (offers.clone(), placed.clone());
            let r1 = match_offers(&mut o1, &pending, &mut p1);
            let (mut o2, mut p2) = (offers.clone(), placed.clone());
            let r2 = plain_match(&mut o2, &pending, &mut p2);
            prop_assert_eq!(&r1.assignments, &r2.assignments);
            prop_assert_eq!(&r1.unmatched, &r2.unmatched);
            prop_assert_eq!(&o1, &o2);
            prop_assert_eq!(&p1, &p2);
        }
    }

    #[test]
    fn counts_follow_placements_one_by_one() {
        let cs: Vec<Vec<String>> = vec![
            vec!["rack_id".into(), "GROUP_BY".into(), "2".into()],
            vec!["hostname".into(), "MAX_PER".into(), "2".into()],
        ];
        let on = |host: &str, rack: &str| PlacedInstance {
            agent_id: host.into(),
            hostname: host.into(),
            attributes: vec![("rack_id".into(), rack.into())],
        };
        let mut c = Constraints::new(&cs, &[]);
        let mut o = offer("a1", 1.0, 1.0, "r1");
        o.hostname = "h1".into();
        // A first group is always welcome; with one group of the two asked for, it is refused.
        assert!(c.accepts(&o));
        c.record(&on("h1", "r1"));
        assert!(!c.accepts(&o));
        c.record(&on("h2", "r2"));
        assert!(c.accepts(&o));
        c.record(&on("h1", "r1"));
        // h1 holds two, the most MAX_PER allows.
        assert!(!c.accepts(&o));
        o.hostname = "h3".into();
        // r1 holds two against r2's one.
        assert!(!c.accepts(&o));
        o.attributes = vec![("rack_id".into(), "r2".into())];
        assert!(c.accepts(&o));
    }

    proptest! {
        #[test]
        fn never_over_commits_and_is_deterministic(
            agents in prop::collection::vec((0.5f64..4.0, 64.0f64..2048.0, 0u32..5), 1..8),
            apps in prop::collection::vec((0.1f64..1.5, 16.0f64..512.0, 0usize..3, 1usize..6), 1..5),
        ) {
            let offers: Vec<Offer> = agents.iter().enumerate().map(|(i, (c, m, r))| {
                let mut o = offer(&format!("agent-{i}"), *c, *m, &format!("r{r}"));
                o.ports = vec![(31000, 31003)];
                o
            }).collect();
            let app_defs: Vec<App> = apps.iter().enumerate().map(|(i, (c, m, ports, _))| {
                let mut a = app(*c, *m, if i % 2 == 0 { &[&["hostname", "UNIQUE"]] } else { &[] });
                a.id = PathId::parse(&format!("/app-{i}"));
                a.port_definitions = Some((0..*ports).map(|_| crate::app::PortDefinition {
                    port: 0, protocol: "tcp".into(), name: None, labels: Default::default() }).collect());
                a
            }).collect();
            let pending: Vec<Pending<'_>> = app_defs.iter().zip(apps.iter()).flat_map(|(a, (_, _, _, n))| {
                (0..*n).map(move |k| Pending { instance_id: InstanceId(format!("{}-{k}", a.id.safe_path())), app: a })
            }).collect();
            let mut o1 = offers.clone();
            let r1 = match_offers(&mut o1, &pending, &mut HashMap::new());
            let mut o2 = offers.clone();
            let r2 = match_offers(&mut o2, &pending, &mut HashMap::new());
            prop_assert_eq!(&r1.assignments, &r2.assignments);
            for (i, o) in offers.iter().enumerate() {
                let on: Vec<&Assignment> = r1.assignments.iter().filter(|a| a.agent_id == o.agent_id).collect();
                let cpus: f64 = on.iter().map(|a| app_defs.iter().find(|d| d.id == a.app_id).map_or(0.0, |d| d.cpus)).sum();
                let mem: f64 = on.iter().map(|a| app_defs.iter().find(|d| d.id == a.app_id).map_or(0.0, |d| d.mem)).sum();
                prop_assert!(cpus <= o.cpus + 1e-6, "agent {} over-committed cpus", i);
                prop_assert!(mem <= o.mem + 1e-6);
                let mut ports: Vec<u32> = on.iter().flat_map(|a| a.host_ports.clone()).collect();
                let n = ports.len();
                ports.sort();
                ports.dedup();
                prop_assert_eq!(ports.len(), n);
                prop_assert!(ports.iter().all(|p| (31000..=31003).contains(p)));
                for d in app_defs.iter().filter(|d| !d.constraints.is_empty()) {
                    prop_assert!(on.iter().filter(|a| a.app_id == d.id).count() <= 1);
                }
            }
        }
    }
}
