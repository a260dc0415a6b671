//! Constraints as a client may write them (any fields, any operator, any regex) against any
//! agent and any placed instances: validation and evaluation may refuse, they may not panic.

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use stride_core::matching::{constraint_accepts, Offer, PlacedInstance};
use stride_core::validation::{validate_constraint, Violations};

#[derive(Arbitrary, Debug)]
struct Input {
    constraint: Vec<String>,
    hostname: String,
    attributes: Vec<(String, String)>,
    region: Option<String>,
    zone: Option<String>,
    placed: Vec<(String, Vec<(String, String)>)>,
}

fuzz_target!(|input: Input| {
    let mut violations = Violations::default();
    validate_constraint(&mut violations, "/constraints(0)", &input.constraint);
    let offer = Offer {
        agent_id: "agent".into(),
        hostname: input.hostname,
        cpus: 1.0,
        mem: 1024.0,
        disk: 0.0,
        gpus: 0,
        ports: vec![(31000, 32000)],
        attributes: input.attributes,
        region: input.region,
        zone: input.zone,
    };
    let placed: Vec<PlacedInstance> = input
        .placed
        .into_iter()
        .enumerate()
        .map(|(i, (hostname, attributes))| PlacedInstance {
            agent_id: format!("agent-{i}"),
            hostname,
            attributes,
        })
        .collect();
    // Evaluated whether or not validation passed: the leader only evaluates valid ones, but
    // evaluation must be total anyway.
    let _ = constraint_accepts(&input.constraint, &offer, &placed);
});
