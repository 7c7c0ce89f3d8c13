//! The KV scenarios replay from their seed: clerks, services and faults draw every choice from
//! the run's one generator and run on its paused clock.

use keel_sim::run_seed;

use crate::generic::Generic;

#[test]
fn a_kv_scenario_replays_exactly_from_its_seed() {
    let scenario = |sim| {
        Generic::clients(3)
            .unreliable()
            .partitions()
            .restarts()
            .snapshots()
            .run(sim, "replay")
    };
    let first = run_seed("replay", 7, scenario);
    let second = run_seed("replay", 7, scenario);
    println!("seed 7: {first:?}\nseed 7: {second:?}");
    assert!(
        first.trace.is_some(),
        "the scenario did not end its cluster"
    );
    assert_eq!(first, second, "the same seed gave two different runs");
}
