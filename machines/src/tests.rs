use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// The intended machine, written out independently of the DSL: (from, trigger) -> (to, action).
fn specification() -> BTreeMap<(Phase, Trigger), (Phase, Action)> {
    use Action::*;
    use Phase::*;
    use Trigger::*;
    let building = [Pending, ProvisioningRedis, ProvisioningServer];
    let live = [Running, Updating, Degraded];
    let mut spec = BTreeMap::new();
    spec.insert((New, Observed), (Pending, CreateNamespace));
    spec.insert(
        (Pending, NamespaceReady),
        (ProvisioningRedis, ProvisionRedis),
    );
    spec.insert(
        (ProvisioningRedis, RedisReady),
        (ProvisioningServer, ProvisionServer),
    );
    spec.insert(
        (ProvisioningRedis, RegistrationExists),
        (Failed, ReportRegistrationExists),
    );
    spec.insert((ProvisioningServer, AllReady), (Running, MarkRunning));
    spec.insert((Running, SpecChanged), (Updating, RollOutUpdate));
    spec.insert((Running, ComponentLost), (Degraded, MarkDegraded));
    spec.insert((Updating, AllReady), (Running, MarkRunning));
    spec.insert((Updating, SpecChanged), (Updating, RollOutUpdate));
    spec.insert((Degraded, AllReady), (Running, MarkRunning));
    spec.insert((Degraded, SpecChanged), (Updating, RollOutUpdate));
    spec.insert((Failed, ProblemResolved), (Pending, CreateNamespace));
    spec.insert((Deleting, CleanupDone), (Deleted, ReleaseFinalizer));
    for phase in [
        Pending,
        ProvisioningRedis,
        ProvisioningServer,
        Updating,
        Degraded,
    ] {
        spec.insert((phase, ProgressStalled), (Stalled, ReportStall));
    }
    spec.insert((Stalled, AllReady), (Running, MarkRunning));
    spec.insert((Stalled, SpecChanged), (Updating, RollOutUpdate));
    spec.insert((Stalled, ProgressResumed), (Pending, CreateNamespace));
    for phase in std::iter::once(New)
        .chain(building)
        .chain(live)
        .chain([Stalled])
    {
        spec.insert((phase, SpecInvalid), (Failed, ReportFailure));
    }
    for phase in std::iter::once(New)
        .chain(building)
        .chain(live)
        .chain([Failed, Stalled])
    {
        spec.insert((phase, DeletionRequested), (Deleting, Teardown));
    }
    for phase in std::iter::once(New)
        .chain(building)
        .chain(live)
        .chain([Failed, Stalled])
    {
        spec.insert((phase, PauseRequested), (Paused, ReportPaused));
    }
    spec.insert((Paused, ResumeRequested), (Pending, CreateNamespace));
    spec.insert((Paused, DeletionRequested), (Deleting, Teardown));
    spec
}

#[test]
fn a_paused_tenant_keeps_nothing_and_resumes_where_every_fact_is_rederived() {
    let paused = step(
        Phase::Running,
        &Input::new(Trigger::PauseRequested, 3)
            .with_reason("kubectl annotate tenant acme neurallog.io/paused-"),
    )
    .expect("a running tenant can be paused");
    assert_eq!(paused.to, Phase::Paused);
    assert_eq!(plan(&paused.outputs, paused.to), Vec::<Duty>::new());
    assert!(
        paused
            .message
            .contains("kubectl annotate tenant acme neurallog.io/paused-"),
        "{}",
        paused.message
    );
    for trigger in Trigger::ALL {
        let leaves = accepts(Phase::Paused, trigger);
        assert_eq!(
            leaves,
            matches!(
                trigger,
                Trigger::ResumeRequested | Trigger::DeletionRequested
            ),
            "Paused on {trigger}"
        );
    }
    let resumed = step(Phase::Paused, &Input::new(Trigger::ResumeRequested, 4))
        .expect("a paused tenant can be resumed");
    assert_eq!(resumed.to, Phase::Pending);
    assert!(resumed.message.contains("resumed"), "{}", resumed.message);
    for phase in [Phase::Deleting, Phase::Deleted, Phase::Paused] {
        assert!(
            !accepts(phase, Trigger::PauseRequested),
            "{phase} must not pause"
        );
    }
}

#[test]
fn every_phase_and_trigger_pair_matches_the_specification() {
    let spec = specification();
    let mut checked = 0;
    for phase in Phase::ALL {
        for trigger in Trigger::ALL {
            let got = step(phase, &Input::new(trigger, 1)).map(|t| {
                assert_eq!(t.from, phase);
                assert!(t.outputs.len() <= 1);
                (t.to, t.outputs[0])
            });
            assert_eq!(
                got,
                spec.get(&(phase, trigger)).copied(),
                "{phase} on {trigger}"
            );
            assert_eq!(accepts(phase, trigger), got.is_some());
            checked += 1;
        }
    }
    assert_eq!(checked, Phase::ALL.len() * Trigger::ALL.len());
}

#[test]
fn deleted_is_terminal_and_deletion_is_reachable_from_every_live_phase() {
    for trigger in Trigger::ALL {
        assert!(step(Phase::Deleted, &Input::new(trigger, 1)).is_none());
    }
    for phase in Phase::ALL {
        let deleting = step(phase, &Input::new(Trigger::DeletionRequested, 1));
        match phase {
            Phase::Deleting | Phase::Deleted => assert!(deleting.is_none()),
            _ => assert_eq!(deleting.map(|t| t.to), Some(Phase::Deleting)),
        }
    }
}

#[test]
fn the_happy_path_reaches_running_with_the_guides_message() {
    let inputs = [
        Trigger::Observed,
        Trigger::NamespaceReady,
        Trigger::RedisReady,
        Trigger::AllReady,
    ]
    .map(|t| Input::new(t, 1));
    let path = run(Phase::New, &inputs);
    let phases: Vec<Phase> = path.iter().map(|t| t.to).collect();
    assert_eq!(
        phases,
        [
            Phase::Pending,
            Phase::ProvisioningRedis,
            Phase::ProvisioningServer,
            Phase::Running
        ]
    );
    assert_eq!(path[3].message, "Tenant is running");
}

#[test]
fn messages_carry_the_reason() {
    let input =
        Input::new(Trigger::SpecInvalid, 3).with_reason("spec.redis.config.dir is reserved");
    let t = step(Phase::Running, &input).expect("transition");
    assert_eq!(
        t.message,
        "Tenant cannot be provisioned: spec.redis.config.dir is reserved"
    );
}

#[test]
fn a_name_auth_already_knows_fails_the_tenant_before_any_registration() {
    let input = Input::new(Trigger::RegistrationExists, 1)
        .with_reason("the Auth service already has a tenant named acme");
    let t = step(Phase::ProvisioningRedis, &input).expect("transition");
    assert_eq!(t.to, Phase::Failed);
    assert_eq!(t.outputs, [Action::ReportRegistrationExists]);
    assert!(!intends_registration(&t.outputs), "nothing is registered");
    assert!(
        t.message.contains("already has a tenant named acme"),
        "{}",
        t.message
    );
    // Only the check before registering reports it: a tenant that has journaled its
    // intent owns the name, and its later phases never take this input.
    for phase in Phase::ALL {
        let accepted = accepts(phase, Trigger::RegistrationExists);
        assert_eq!(accepted, phase == Phase::ProvisioningRedis, "{phase}");
    }
}

/// The journal says which tenant owns its Auth registration: exactly the transitions that
/// ask for the Registration duty record the intent, and only entering ProvisioningServer
/// does, so no phase that keeps Registration is reached without it except through Stalled
/// (whose applier registers only after the intent: see `ensure_registered`).
#[test]
fn only_entering_provisioning_server_records_the_intent_to_register() {
    for from in Phase::ALL {
        for trigger in Trigger::ALL {
            let Some(t) = step(from, &Input::new(trigger, 0)) else {
                continue;
            };
            let expected = from == Phase::ProvisioningRedis && trigger == Trigger::RedisReady;
            assert_eq!(
                intends_registration(&t.outputs),
                expected,
                "{from} --{trigger}--> {}",
                t.to
            );
        }
    }
}

#[test]
fn phase_names_round_trip() {
    for phase in Phase::ALL {
        assert_eq!(phase.as_str().parse::<Phase>(), Ok(phase));
        let json = serde_json::to_string(&phase).expect("serialize");
        assert_eq!(json, format!("\"{phase}\""));
    }
    assert!("Runing".parse::<Phase>().is_err());
}

#[test]
fn the_committed_diagram_matches_the_machine() {
    let readme = include_str!("../README.md");
    let expected = format!("```mermaid\n{}```", mermaid());
    assert!(
        readme.contains(&expected),
        "machines/README.md is out of date; regenerate it with \
         `cargo run -p neurallog-machines --example diagram` and paste:\n{expected}"
    );
}

fn any_input() -> impl Strategy<Value = Input> {
    (
        0..Trigger::ALL.len(),
        1i64..5,
        proptest::option::of("[a-z ]{0,12}"),
    )
        .prop_map(|(i, generation, reason)| Input {
            trigger: Trigger::ALL[i],
            generation,
            redis: None,
            server: None,
            reason,
        })
}

proptest! {
    #[test]
    fn runs_are_deterministic_and_chained(inputs in proptest::collection::vec(any_input(), 0..64)) {
        let first = run(Phase::New, &inputs);
        let second = run(Phase::New, &inputs);
        prop_assert_eq!(&first, &second);
        let mut phase = Phase::New;
        for t in &first {
            prop_assert_eq!(t.from, phase);
            prop_assert_eq!(t.outputs.len(), 1);
            phase = t.to;
        }
    }

    #[test]
    fn nothing_leaves_deleted_and_running_needs_all_ready(inputs in proptest::collection::vec(any_input(), 0..64)) {
        let path = run(Phase::New, &inputs);
        let mut seen_deleted = false;
        for t in &path {
            prop_assert!(!seen_deleted, "transition after Deleted: {:?}", t);
            seen_deleted = t.to == Phase::Deleted;
            if t.to == Phase::Running {
                prop_assert!(matches!(t.from, Phase::ProvisioningServer | Phase::Updating | Phase::Degraded | Phase::Stalled));
            }
        }
    }
}

/// A pass after a crash between journaling and carrying out a transition only knows the
/// phase: what the phase keeps must cover what the transition into it asked for.
#[test]
fn every_phase_keeps_what_the_transition_into_it_asked_for() {
    for from in Phase::ALL {
        for trigger in Trigger::ALL {
            let Some(t) = step(from, &Input::new(trigger, 0)) else {
                continue;
            };
            for duty in t.outputs.iter().flat_map(|a| a.duties()) {
                assert!(
                    t.to.keeps().contains(duty),
                    "{from} --{trigger}--> {}: {duty} is asked for but {} does not keep it",
                    t.to,
                    t.to
                );
            }
        }
    }
}

#[test]
fn a_plan_is_in_duty_order_without_repeats() {
    let plan = plan(
        &[Action::ProvisionServer, Action::CreateNamespace],
        Phase::Pending,
    );
    assert_eq!(
        plan,
        vec![
            Duty::HoldFinalizer,
            Duty::Namespace,
            Duty::Server,
            Duty::Registration
        ]
    );
    assert_eq!(super::plan(&[], Phase::New), Vec::<Duty>::new());
    assert_eq!(
        super::plan(&[Action::Teardown], Phase::Deleting),
        vec![Duty::Teardown]
    );
}

#[test]
fn reporting_actions_ask_for_no_duty() {
    for action in [
        Action::MarkRunning,
        Action::MarkDegraded,
        Action::ReportFailure,
        Action::ReportStall,
        Action::ReportRegistrationExists,
    ] {
        assert!(action.duties().is_empty(), "{action}");
    }
}

#[test]
fn the_committed_duty_table_matches_the_machine() {
    let readme = include_str!("../README.md");
    let expected = duty_table();
    assert!(
        readme.contains(&expected),
        "machines/README.md is out of date; regenerate it with \
         `cargo run -p neurallog-machines --example diagram` and paste:\n{expected}"
    );
}
