//! Offer matching: which agent gets which pending instance, with which host ports.
//!
//! A pure function over the agents' free resources ("offers"), the pending launches and the
//! instances already placed. It never over-commits cpus, mem, disk or ports, honours every
//! constraint (reference §6), and gives the same answer for the same input: candidates are ranked
//! by a [`Score`] whose field order is the policy, with the agent id as the last tie-break.

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
    Regex::new(&format!("^(?:{re})$")).is_ok_and(|r| r.is_match(value))
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

fn rejects(app: &App, o: &Offer, placed: &[PlacedInstance], fixed_ports: bool) -> Option<Reject> {
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
        .all(|c| constraint_accepts(c, o, placed))
    {
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
    let wanted = app.required_host_ports();
    let fits = if fixed_ports {
        let mut ports = o.ports.clone();
        take_ports(&mut ports, &wanted).is_some()
    } else {
        free_port_count(&o.ports) >= wanted.len()
    };
    if !fits {
        return Some(Reject::InsufficientPorts);
    }
    None
}

/// Places one instance on offer `ix`: takes its resources and records where it went.
fn place(
    offers: &mut [Offer],
    ix: usize,
    p: &Pending<'_>,
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
    app_placed.push(placed_instance);
    true
}

fn score(o: &Offer, app: &App, same_app: usize) -> (usize, i64) {
    (same_app, ((o.cpus - app.cpus) * 1000.0).round() as i64)
}

/// Matches `pending` against `offers`, app by app in the order the apps first appear (and in
/// order within an app). `placed` holds each app's placed instances (of its current
/// configuration), and is extended as instances are assigned.
///
/// Each instance goes to the feasible agent with the lowest [`Score`]. For apps without
/// constraints or fixed host ports the agents wait in a heap keyed by that score, so placing k
/// instances over A agents costs O(A + k log A) instead of O(k × A); the answer is the same,
/// since placing an instance only changes the score of the agent that took it.
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
    for app_id in order {
        let list = &by_app[app_id];
        let app = list[0].app;
        let app_placed = placed.entry(app.id.clone()).or_default();
        let mut same: HashMap<String, usize> = HashMap::new();
        for x in app_placed.iter() {
            *same.entry(x.agent_id.clone()).or_default() += 1;
        }
        let fixed_ports = app.required_host_ports().iter().any(Option::is_some);
        let simple = app.constraints.is_empty() && !fixed_ports;
        let reasons_for =
            |offers: &[Offer], app_placed: &[PlacedInstance]| -> BTreeMap<Reject, usize> {
                let mut reasons = BTreeMap::new();
                for o in offers {
                    if let Some(r) = rejects(app, o, app_placed, fixed_ports) {
                        *reasons.entry(r).or_default() += 1;
                    }
                }
                reasons
            };
        if simple {
            let mut heap: BinaryHeap<Reverse<(usize, i64, String, usize)>> = BinaryHeap::new();
            for (ix, o) in offers.iter().enumerate() {
                if rejects(app, o, app_placed, false).is_none() {
                    let (a, b) = score(o, app, same.get(&o.agent_id).copied().unwrap_or(0));
                    heap.push(Reverse((a, b, o.agent_id.clone(), ix)));
                }
            }
            // Once no agent is left, every further instance waits for the same reasons.
            let mut exhausted: Option<BTreeMap<Reject, usize>> = None;
            for p in list {
                let Some(Reverse((_, _, agent, ix))) = heap.pop() else {
                    let reasons = exhausted.get_or_insert_with(|| reasons_for(offers, app_placed));
                    result
                        .unmatched
                        .push((p.instance_id.clone(), reasons.clone()));
                    continue;
                };
                if !place(offers, ix, p, app_placed, &mut result) {
                    result
                        .unmatched
                        .push((p.instance_id.clone(), reasons_for(offers, app_placed)));
                    continue;
                }
                let n = same.entry(agent.clone()).or_default();
                *n += 1;
                if rejects(app, &offers[ix], app_placed, false).is_none() {
                    let (a, b) = score(&offers[ix], app, *n);
                    heap.push(Reverse((a, b, agent, ix)));
                }
            }
            continue;
        }
        for p in list {
            let mut best: Option<(Score<'_>, usize)> = None;
            for (ix, o) in offers.iter().enumerate() {
                if rejects(app, o, app_placed, fixed_ports).is_some() {
                    continue;
                }
                let (same_app_instances, cpus_left_milli) =
                    score(o, app, same.get(&o.agent_id).copied().unwrap_or(0));
                let s = Score {
                    same_app_instances,
                    cpus_left_milli,
                    agent: &o.agent_id,
                };
                if best.as_ref().is_none_or(|(b, _)| s < *b) {
                    best = Some((s, ix));
                }
            }
            let chosen = best.map(|(_, ix)| ix);
            match chosen {
                Some(ix) if place(offers, ix, p, app_placed, &mut result) => {
                    *same.entry(offers[ix].agent_id.clone()).or_default() += 1;
                }
                _ => result
                    .unmatched
                    .push((p.instance_id.clone(), reasons_for(offers, app_placed))),
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
