//! How many instances to start and which to kill (reference §5.4, §5.5, §8.3).

use crate::app::KillSelection;
use crate::instance::{Instance, InstanceId};

/// Which instances to kill and how many to start to reach `scale_to`.
#[derive(Debug, Default, PartialEq)]
pub struct ScalingProposition {
    pub to_kill: Vec<InstanceId>,
    pub to_start: usize,
}

/// Marathon's `ScalingProposition.propose`. `instances` are the app's instances; only those
/// that count toward scale (goal Running, not UnreachableInactive) are considered.
pub fn propose(
    instances: &[&Instance],
    sentenced: &[InstanceId],
    scale_to: usize,
    kill_selection: KillSelection,
) -> ScalingProposition {
    propose_spread(instances, sentenced, scale_to, kill_selection, None)
}

/// [`propose`] for an app with a `GROUP_BY` constraint on `group_by`: after the sentenced
/// instances, kills come from the most populated groups, so the spread stays even (reference
/// §6.3), before the ordinary order decides within a group.
pub fn propose_spread(
    instances: &[&Instance],
    sentenced: &[InstanceId],
    scale_to: usize,
    kill_selection: KillSelection,
    group_by: Option<&str>,
) -> ScalingProposition {
    let running: Vec<&Instance> = instances
        .iter()
        .copied()
        .filter(|i| i.counts_toward_scale())
        .collect();
    let sentenced_running = sentenced
        .iter()
        .filter(|id| running.iter().any(|i| &i.id == *id))
        .count();
    let decommission = running
        .len()
        .saturating_sub(scale_to)
        .max(sentenced_running);
    let mut candidates: Vec<&Instance> = running.clone();
    candidates.sort_by(|a, b| {
        a.condition
            .kill_weight()
            .cmp(&b.condition.kill_weight())
            .then_with(|| match kill_selection {
                KillSelection::YoungestFirst => b.active_since().cmp(&a.active_since()),
                KillSelection::OldestFirst => a.active_since().cmp(&b.active_since()),
            })
            .then(a.id.cmp(&b.id))
    });
    let mut to_kill: Vec<InstanceId> = candidates
        .iter()
        .filter(|i| sentenced.contains(&i.id))
        .map(|i| i.id.clone())
        .collect();
    let mut rest: Vec<&Instance> = candidates
        .into_iter()
        .filter(|i| !sentenced.contains(&i.id))
        .collect();
    if let Some(field) = group_by {
        let value = |i: &Instance| -> String {
            i.placement
                .as_ref()
                .and_then(|p| {
                    if field == "hostname" || field == "@hostname" {
                        Some(p.hostname.clone())
                    } else {
                        p.attributes
                            .iter()
                            .find(|(k, _)| k == field)
                            .map(|(_, v)| v.clone())
                    }
                })
                .unwrap_or_default()
        };
        let mut counts: std::collections::BTreeMap<String, usize> =
            std::collections::BTreeMap::new();
        for i in &rest {
            *counts.entry(value(i)).or_default() += 1;
        }
        while to_kill.len() < decommission && !rest.is_empty() {
            // The most populated group; ties go to the smallest value, for determinism.
            let Some((biggest, _)) = counts
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(k, v)| (k.clone(), *v))
            else {
                break;
            };
            let Some(pos) = rest.iter().position(|i| value(i) == biggest) else {
                break;
            };
            let victim = rest.remove(pos);
            if let Some(c) = counts.get_mut(&biggest) {
                *c -= 1;
            }
            to_kill.push(victim.id.clone());
        }
    }
    let missing = decommission.saturating_sub(to_kill.len());
    to_kill.extend(rest.iter().take(missing).map(|i| i.id.clone()));
    to_kill.truncate(decommission);
    let to_start = (scale_to + decommission).saturating_sub(running.len());
    ScalingProposition { to_kill, to_start }
}

/// The parameters of a rolling restart (Marathon's `computeRestartStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartStrategy {
    /// Old instances to kill right away.
    pub kill_now: usize,
    /// Most instances (old and new) alive at once.
    pub max_capacity: usize,
}

/// `n` = target instances, `m`/`o` = the upgrade strategy, `healthy` = goal-Running instances
/// considered healthy (old and new), `current` = all instances of the app.
pub fn restart_strategy(
    n: usize,
    m: f64,
    o: f64,
    healthy: usize,
    current: usize,
    resident: bool,
) -> RestartStrategy {
    // Marathon computes with doubles: 100 * 0.07 = 7.000000000000001 rounds up to 8.
    let min_healthy = (n as f64 * m).ceil() as usize;
    let mut max_capacity = (n as f64 * (1.0 + o)).floor() as usize;
    let mut kill_now = healthy.saturating_sub(min_healthy);
    if min_healthy == max_capacity && max_capacity <= healthy {
        if resident {
            kill_now = healthy - min_healthy + 1;
        } else {
            max_capacity += 1;
        }
    }
    if n < current {
        kill_now = kill_now.max(current - n);
    }
    RestartStrategy {
        kill_now,
        max_capacity,
    }
}

/// How many new instances a rolling restart may start now.
pub fn restart_launch_count(
    n: usize,
    max_capacity: usize,
    old_active: usize,
    started: usize,
) -> usize {
    let left_capacity = max_capacity.saturating_sub(old_active + started);
    n.saturating_sub(started).min(left_capacity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{Condition, Instance};
    use crate::path::PathId;
    use crate::time::Timestamp;
    use proptest::prelude::*;

    fn running(n: usize) -> Vec<Instance> {
        let app = PathId::parse("/a");
        (0..n)
            .map(|k| {
                let mut i = Instance::scheduled(&app, Timestamp(1), Timestamp(k as i64));
                i.condition = Condition::Running;
                i.started_at = Some(Timestamp(k as i64 * 10));
                i
            })
            .collect()
    }

    #[test]
    fn worked_examples_of_the_reference() {
        assert_eq!(
            restart_strategy(4, 1.0, 1.0, 4, 4, false),
            RestartStrategy {
                kill_now: 0,
                max_capacity: 8
            }
        );
        assert_eq!(
            restart_strategy(3, 1.0, 0.0, 3, 3, false),
            RestartStrategy {
                kill_now: 0,
                max_capacity: 4
            }
        );
        assert_eq!(
            restart_strategy(4, 0.5, 0.0, 4, 4, true),
            RestartStrategy {
                kill_now: 2,
                max_capacity: 4
            }
        );
        assert_eq!(restart_strategy(3, 0.0, 0.0, 3, 3, false).kill_now, 3);
        assert_eq!(
            restart_strategy(10, 0.5, 0.2, 10, 10, false),
            RestartStrategy {
                kill_now: 5,
                max_capacity: 12
            }
        );
        // Floating point as Marathon has it.
        assert_eq!((100.0f64 * 0.07).ceil() as usize, 8);
        assert_eq!(
            restart_strategy(100, 0.07, 0.0, 100, 100, false).kill_now,
            92
        );
        assert_eq!(restart_launch_count(10, 12, 10, 0), 2);
    }

    #[test]
    fn youngest_first_kills_the_newest() {
        let inst = running(4);
        let refs: Vec<&Instance> = inst.iter().collect();
        let p = propose(&refs, &[], 2, KillSelection::YoungestFirst);
        assert_eq!(p.to_kill, vec![inst[3].id.clone(), inst[2].id.clone()]);
        assert_eq!(p.to_start, 0);
        let p = propose(&refs, &[], 2, KillSelection::OldestFirst);
        assert_eq!(p.to_kill, vec![inst[0].id.clone(), inst[1].id.clone()]);
        let p = propose(&refs, &[], 6, KillSelection::YoungestFirst);
        assert_eq!(p.to_start, 2);
    }

    #[test]
    fn group_by_kills_from_the_biggest_group() {
        let mut inst = running(5);
        let racks = ["r1", "r1", "r1", "r2", "r2"];
        for (i, rack) in inst.iter_mut().zip(racks) {
            i.placement = Some(crate::instance::Placement {
                agent_id: format!("a-{rack}"),
                hostname: "h".into(),
                attributes: vec![("rack_id".into(), rack.into())],
            });
        }
        let refs: Vec<&Instance> = inst.iter().collect();
        let p = propose_spread(&refs, &[], 2, KillSelection::YoungestFirst, Some("rack_id"));
        assert_eq!(p.to_kill.len(), 3);
        let killed_r1 = p
            .to_kill
            .iter()
            .filter(|id| inst[..3].iter().any(|i| &&i.id == id))
            .count();
        assert_eq!(killed_r1, 2, "the spread stays even: 1 and 1 left");
    }

    proptest! {
        #[test]
        fn scaling_reaches_the_target(have in 0usize..30, want in 0usize..30) {
            let inst = running(have);
            let refs: Vec<&Instance> = inst.iter().collect();
            let p = propose(&refs, &[], want, KillSelection::YoungestFirst);
            prop_assert_eq!(have - p.to_kill.len() + p.to_start, want);
        }

        #[test]
        fn restart_never_exceeds_capacity(n in 1usize..50, m in 0.0f64..=1.0, o in 0.0f64..=1.0) {
            let s = restart_strategy(n, m, o, n, n, false);
            let start = restart_launch_count(n, s.max_capacity, n, 0);
            prop_assert!(n + start <= s.max_capacity.max(n + 1));
            let min_healthy = ((n as f64 * m).ceil() as usize).min(n);
            prop_assert!(n - s.kill_now >= min_healthy);
        }
    }
}
