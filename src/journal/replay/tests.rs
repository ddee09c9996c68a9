use super::*;
use crate::journal::testing::{TO_RUNNING, lifecycle, open_temp, t0};
use chrono::Duration;
use neurallog_machines::{Trigger, step};

const UID: &str = "aaaaaaaa-0000-4000-8000-000000000001";

/// `acme` provisioned, running, then deleted: 6 records.
fn recorded_chain() -> Vec<Record> {
    let (_dir, journal) = open_temp();
    let mut triggers = TO_RUNNING.to_vec();
    triggers.extend([Trigger::DeletionRequested, Trigger::CleanupDone]);
    for entry in lifecycle("acme", UID, t0(), &triggers) {
        journal.append(entry).unwrap();
    }
    journal.history(UID).collect::<Result<_, _>>().unwrap()
}

/// The machine with one deliberate change: Redis being ready skips straight to Running.
fn skips_server_provisioning(phase: Phase, input: &Input) -> Option<Transition> {
    let mut transition = step(phase, input)?;
    if input.trigger == Trigger::RedisReady {
        transition.to = Phase::Running;
        transition.outputs = vec![Action::MarkRunning];
    }
    Some(transition)
}

#[test]
fn the_current_machine_replays_the_journal_unchanged() {
    let records = recorded_chain();
    let replay = replay(&records, None, step);
    assert_eq!(replay.steps.len(), 6);
    assert!(replay.divergence().is_none());
    assert!(replay.steps.iter().all(ReplayedStep::matches));
}

#[test]
fn a_changed_step_diverges_at_the_first_record_it_affects() {
    let records = recorded_chain();
    let replay = replay(&records, None, skips_server_provisioning);
    let divergence = replay.divergence().expect("a divergence");
    assert_eq!(divergence.seq, 3);
    assert_eq!(replay.steps.len(), 3, "replay stops at the divergence");
    assert_eq!(divergence.recorded.to, Phase::ProvisioningServer);
    assert_eq!(
        divergence.replayed.as_ref().map(|t| t.to),
        Some(Phase::Running)
    );
}

#[test]
fn a_step_that_now_ignores_an_input_diverges_too() {
    let records = recorded_chain();
    let ignores_deletion = |phase: Phase, input: &Input| {
        (input.trigger != Trigger::DeletionRequested)
            .then(|| step(phase, input))
            .flatten()
    };
    let replay = replay(&records, None, ignores_deletion);
    let divergence = replay.divergence().expect("a divergence");
    assert_eq!(divergence.seq, 5);
    assert!(divergence.replayed.is_none());
}

#[test]
fn different_outputs_alone_are_a_divergence() {
    let records = recorded_chain();
    let no_finalizer = |phase: Phase, input: &Input| {
        let mut transition = step(phase, input)?;
        transition
            .outputs
            .retain(|a| *a != Action::ReleaseFinalizer);
        Some(transition)
    };
    assert_eq!(
        replay(&records, None, no_finalizer)
            .divergence()
            .map(|s| s.seq),
        Some(6)
    );
}

#[test]
fn replay_stops_at_the_requested_seq() {
    let records = recorded_chain();
    let replay = replay(&records, Some(2), skips_server_provisioning);
    assert_eq!(replay.steps.len(), 2);
    assert!(replay.divergence().is_none());
}

#[test]
fn the_divergence_is_printed_side_by_side() {
    let records = recorded_chain();
    let replay = replay(&records, None, skips_server_provisioning);
    let mut out = Vec::new();
    write_replay(&mut out, &replay).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("first divergence at seq 3:"), "{text}");
    let row = |name: &str| -> Vec<String> {
        text.lines()
            .find(|line| line.starts_with(name))
            .map(|line| line.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        row("to "),
        ["to", "ProvisioningServer", "Running"],
        "{text}"
    );
    assert!(text.contains("outputs  ProvisionServer"), "{text}");
    let provisioned = "HoldFinalizer,Namespace,NamespaceGuards,Redis,Server,Registration";
    assert_eq!(
        row("duties"),
        ["duties", provisioned, provisioned],
        "{text}"
    );
    assert!(text.lines().nth(3).unwrap().ends_with("DIVERGES"), "{text}");
}

#[test]
fn at_a_time_shows_the_phase_then_in_force() {
    let records = recorded_chain();
    let mut out = Vec::new();
    write_at(&mut out, "acme", &records, t0() + Duration::seconds(3)).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "at 2025-01-02T03:04:08Z: tenant acme was Running (since seq 4 at 2025-01-02T03:04:08Z, generation 1): Tenant is running\n"
    );
    let mut out = Vec::new();
    write_at(&mut out, "acme", &records, t0() - Duration::days(1)).unwrap();
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("was not yet observed (phase New)")
    );
}

#[test]
fn a_compacted_chain_replays_from_its_checkpoint() {
    let records = recorded_chain();
    // Retention compacted seqs 1-3: the chain starts at 4, from the checkpoint's phase.
    let kept = &records[3..];
    let replay = replay(kept, None, step);
    assert_eq!(replay.steps.len(), 3);
    assert!(replay.divergence().is_none(), "{:?}", replay.divergence());
}
