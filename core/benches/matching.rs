//! Offer matching at the launch-spread scenario's sizes: one app × 100 instances over 1,000
//! agents in 25 racks, without constraints and with `hostname UNIQUE` + `rack_id GROUP_BY`,
//! with none or 900 of the app's instances already placed; and one offer checked against
//! 900 placed instances, by the plain definition and by the counts.
//!
//! `cargo bench -p stride-core --bench matching`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use stride_core::instance::InstanceId;
use stride_core::matching::{
    constraint_accepts, match_offers, Constraints, Offer, Pending, PlacedInstance,
};
use stride_core::{App, PathId};

fn offers(n: usize) -> Vec<Offer> {
    (0..n)
        .map(|i| Offer {
            agent_id: format!("sim-{i:05}"),
            hostname: format!("sim-{i:05}.bench"),
            cpus: 16.0,
            mem: 65536.0,
            disk: 65536.0,
            gpus: 0,
            ports: vec![(31000, 32999)],
            attributes: vec![("rack_id".into(), format!("rack-{:03}", i % 25))],
            region: None,
            zone: None,
        })
        .collect()
}

fn app(spread: bool) -> App {
    let mut a = App::new("/bench/x");
    a.cpus = 0.01;
    a.mem = 8.0;
    if spread {
        a.constraints = vec![
            vec!["hostname".into(), "UNIQUE".into()],
            vec!["rack_id".into(), "GROUP_BY".into()],
        ];
    }
    a
}

/// The app's instances on the last `n` agents.
fn placed(all: &[Offer], n: usize) -> Vec<PlacedInstance> {
    all[all.len() - n..]
        .iter()
        .map(|o| PlacedInstance {
            agent_id: o.agent_id.clone(),
            hostname: o.hostname.clone(),
            attributes: o.attributes.clone(),
        })
        .collect()
}

fn matching(c: &mut Criterion) {
    let all = offers(1_000);
    for spread in [false, true] {
        let a = app(spread);
        let pending: Vec<Pending<'_>> = (0..100)
            .map(|k| Pending {
                instance_id: InstanceId(format!("bench_x.{k}")),
                app: &a,
            })
            .collect();
        for already in [0, 900] {
            let name = format!(
                "match_offers/100 of one app over 1000 agents/{}/{already} placed",
                if spread {
                    "unique+group_by"
                } else {
                    "no constraints"
                }
            );
            c.bench_function(&name, |b| {
                b.iter_batched(
                    || {
                        let mut p = HashMap::new();
                        p.insert(PathId::parse("/bench/x"), placed(&all, already));
                        (all.clone(), p)
                    },
                    |(mut o, mut p)| black_box(match_offers(&mut o, &pending, &mut p)),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    let a = app(true);
    let on = placed(&all, 900);
    let offer = &all[0];
    c.bench_function("one offer, unique+group_by, 900 placed/definition", |b| {
        b.iter(|| {
            black_box(
                a.constraints
                    .iter()
                    .all(|c| constraint_accepts(c, black_box(offer), &on)),
            )
        })
    });
    let counts = Constraints::new(&a.constraints, &on);
    c.bench_function("one offer, unique+group_by, 900 placed/counts", |b| {
        b.iter(|| black_box(counts.accepts(black_box(offer))))
    });
}

criterion_group!(benches, matching);
criterion_main!(benches);
