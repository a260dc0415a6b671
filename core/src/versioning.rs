//! Versions and service ports when the root group changes (reference §3.6, §3.15).

use std::collections::{BTreeMap, BTreeSet};

use crate::app::{App, NetworkMode, VersionInfo};
use crate::error::{ApiError, ErrorCode};
use crate::path::PathId;
use crate::time::Timestamp;

/// Marathon's service port range, inclusive.
pub const SERVICE_PORT_MIN: i64 = 10000;
pub const SERVICE_PORT_MAX: i64 = 20000;

/// Sets `version` and `versionInfo` of `new` given the stored `old` app, for a change made at `t`.
/// `restart` marks `POST /v2/apps/{id}/restart`.
pub fn stamp(old: Option<&App>, new: &mut App, t: Timestamp, restart: bool) {
    match old {
        None => {
            new.version = Some(t);
            new.version_info = Some(VersionInfo {
                last_scaling_at: t,
                last_config_change_at: t,
            });
        }
        Some(old) => {
            let old_info = old.version_info.clone().unwrap_or(VersionInfo {
                last_scaling_at: old.version.unwrap_or(t),
                last_config_change_at: old.version.unwrap_or(t),
            });
            new.version_info = Some(old_info.clone());
            new.version = old.version;
            if restart {
                new.version = Some(t);
                new.version_info = Some(VersionInfo {
                    last_scaling_at: old_info.last_scaling_at,
                    last_config_change_at: t,
                });
            } else if old.is_upgrade(new) {
                new.version = Some(t);
                new.version_info = Some(VersionInfo {
                    last_scaling_at: t,
                    last_config_change_at: t,
                });
            } else if old.instances != new.instances {
                new.version = Some(t);
                new.version_info = Some(VersionInfo {
                    last_scaling_at: t,
                    last_config_change_at: old_info.last_config_change_at,
                });
            }
        }
    }
}

fn service_ports_mut(app: &mut App) -> Vec<&mut i64> {
    match app.network_mode() {
        NetworkMode::Host => app
            .port_definitions
            .iter_mut()
            .flatten()
            .map(|p| &mut p.port)
            .collect(),
        _ => app
            .container
            .iter_mut()
            .flat_map(|c| c.port_mappings.iter_mut().flatten())
            .map(|m| &mut m.service_port)
            .collect(),
    }
}

/// Replaces service ports of 0 by free ports from [10000, 20000]. Ports the previous version
/// used are reused first; a port is free when no other app of the root uses it.
pub fn assign_service_ports(
    apps: &BTreeMap<PathId, App>,
    old: Option<&App>,
    new: &mut App,
) -> Result<(), ApiError> {
    let mut used: BTreeSet<i64> = apps
        .values()
        .filter(|a| a.id != new.id)
        .flat_map(App::service_ports)
        .filter(|p| *p != 0)
        .collect();
    used.extend(new.service_ports().into_iter().filter(|p| *p != 0));
    assign_service_ports_in(|p| used.contains(&p), old, new)
}

/// [`assign_service_ports`] for a caller that keeps the root's service ports counted rather
/// than walking every app: `in_use` answers for the ports of the whole new root, `new`'s own
/// (as given) included.
pub fn assign_service_ports_in(
    in_use: impl Fn(i64) -> bool,
    old: Option<&App>,
    new: &mut App,
) -> Result<(), ApiError> {
    let mut taken: BTreeSet<i64> = BTreeSet::new();
    let used = |p: i64, taken: &BTreeSet<i64>| in_use(p) || taken.contains(&p);
    let mut reusable: Vec<i64> = old
        .map(|o| {
            o.service_ports()
                .into_iter()
                .filter(|p| *p != 0 && !used(*p, &taken))
                .collect()
        })
        .unwrap_or_default();
    reusable.reverse();
    let mut next = SERVICE_PORT_MIN;
    for port in service_ports_mut(new) {
        if *port != 0 {
            continue;
        }
        if let Some(p) = reusable.pop() {
            *port = p;
            taken.insert(p);
            continue;
        }
        while next <= SERVICE_PORT_MAX && used(next, &taken) {
            next += 1;
        }
        if next > SERVICE_PORT_MAX {
            return Err(ApiError::new(
                ErrorCode::Unprocessable,
                format!("All ports in the range [{SERVICE_PORT_MIN}-{SERVICE_PORT_MAX}) are already in use"),
            ));
        }
        *port = next;
        taken.insert(next);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_info_follows_the_table() {
        let mut a = App::new("/a");
        stamp(None, &mut a, Timestamp(1), false);
        let mut scaled = a.clone();
        scaled.instances = 3;
        stamp(Some(&a), &mut scaled, Timestamp(2), false);
        let vi = scaled.version_info.clone().expect("set");
        assert_eq!(
            (scaled.version, vi.last_scaling_at, vi.last_config_change_at),
            (Some(Timestamp(2)), Timestamp(2), Timestamp(1))
        );
        let mut same = scaled.clone();
        stamp(Some(&scaled), &mut same, Timestamp(3), false);
        assert_eq!(same.version, Some(Timestamp(2)));
        let mut restarted = scaled.clone();
        stamp(Some(&scaled), &mut restarted, Timestamp(4), true);
        let vi = restarted.version_info.clone().expect("set");
        assert_eq!(
            (vi.last_scaling_at, vi.last_config_change_at),
            (Timestamp(2), Timestamp(4))
        );
    }

    #[test]
    fn service_ports_are_unique_and_reused() {
        let mut apps = BTreeMap::new();
        let mut a = App::new("/a");
        assign_service_ports(&apps, None, &mut a).expect("free");
        assert_eq!(a.service_ports(), vec![10000]);
        apps.insert(a.id.clone(), a.clone());
        let mut b = App::new("/b");
        assign_service_ports(&apps, None, &mut b).expect("free");
        assert_eq!(b.service_ports(), vec![10001]);
        let mut a2 = App::new("/a");
        assign_service_ports(&apps, Some(&a), &mut a2).expect("free");
        assert_eq!(a2.service_ports(), vec![10000]);
    }
}
