//! What the operator does to the cluster and to Auth for a tenant, and which duties each
//! action and each phase stand for. The applier carries out [`plan`]: the transition's
//! outputs, then the level-triggered upkeep of what the current phase keeps, so a crash
//! between journaling a transition and carrying it out is repaired by the next pass.

use crate::{Action, Phase};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One thing the operator makes true. Declared in the order the applier carries them out:
/// the finalizer before anything it guards, the namespace and its guards (quota, limits,
/// network policies) before any pod, Redis before the server that needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Duty {
    /// The Tenant carries the operator's finalizer.
    HoldFinalizer,
    /// The tenant namespace exists (created, never adopted) and is as rendered.
    Namespace,
    /// Resource quota, limit range and network policies, as rendered; stale policies go.
    NamespaceGuards,
    /// Redis ConfigMap, headless Service and StatefulSet, as rendered.
    Redis,
    /// Server Service and Deployment, as rendered.
    Server,
    /// Auth knows the tenant.
    Registration,
    /// The namespace is deleted and Auth no longer knows the tenant.
    Teardown,
    /// The Tenant no longer carries the operator's finalizer.
    ReleaseFinalizer,
}

impl Duty {
    pub const ALL: [Duty; 8] = [
        Duty::HoldFinalizer,
        Duty::Namespace,
        Duty::NamespaceGuards,
        Duty::Redis,
        Duty::Server,
        Duty::Registration,
        Duty::Teardown,
        Duty::ReleaseFinalizer,
    ];
}

impl fmt::Display for Duty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Everything a tenant that is set up keeps: what provisioning builds, in order (the
/// duties before teardown).
const PROVISIONED: &[Duty] = Duty::ALL.split_at(6).0;

impl Action {
    /// The duties this action asks for when the transition that emits it is taken.
    /// Actions that only report (an Event and status) ask for none.
    pub fn duties(self) -> &'static [Duty] {
        match self {
            Action::CreateNamespace => &[Duty::HoldFinalizer, Duty::Namespace],
            Action::ProvisionRedis => &[Duty::NamespaceGuards, Duty::Redis],
            Action::ProvisionServer => &[Duty::Server, Duty::Registration],
            Action::RollOutUpdate => &[
                Duty::Namespace,
                Duty::NamespaceGuards,
                Duty::Redis,
                Duty::Server,
            ],
            Action::Teardown => &[Duty::Teardown],
            Action::ReleaseFinalizer => &[Duty::ReleaseFinalizer],
            Action::MarkRunning
            | Action::MarkDegraded
            | Action::ReportFailure
            | Action::ReportStall
            | Action::ReportRegistrationExists
            | Action::ReportPaused => &[],
        }
    }
}

impl Phase {
    /// What the operator keeps true on every pass while a tenant is in this phase.
    pub fn keeps(self) -> &'static [Duty] {
        match self {
            // Paused keeps nothing: drift stays until the tenant is resumed.
            Phase::New | Phase::Paused => &[],
            // Held, so that deleting a failed Tenant still passes through teardown.
            Phase::Failed => &[Duty::HoldFinalizer],
            Phase::Pending => &PROVISIONED[..2],
            Phase::ProvisioningRedis => &PROVISIONED[..4],
            Phase::ProvisioningServer
            | Phase::Running
            | Phase::Updating
            | Phase::Degraded
            | Phase::Stalled => PROVISIONED,
            Phase::Deleting => &[Duty::Teardown],
            Phase::Deleted => &[Duty::ReleaseFinalizer],
        }
    }
}

/// Whether a transition with these outputs is the tenant's recorded intent to register
/// its name with Auth: it asks for [`Duty::Registration`], and the operator journals it
/// before any registration call (after checking that Auth does not know the name yet).
/// A tenant whose journal holds such a transition owns the registration of its name; any
/// other tenant never deregisters it.
pub fn intends_registration(outputs: &[Action]) -> bool {
    outputs
        .iter()
        .any(|action| action.duties().contains(&Duty::Registration))
}

/// What a pass in `phase` carries out, in order: the duties of `outputs` (the transition
/// this pass took, if any) and those `phase` keeps, each once.
pub fn plan(outputs: &[Action], phase: Phase) -> Vec<Duty> {
    let mut duties: Vec<Duty> = outputs
        .iter()
        .flat_map(|action| action.duties().iter().copied())
        .chain(phase.keeps().iter().copied())
        .collect();
    duties.sort();
    duties.dedup();
    duties
}

/// The transitions with their outputs and the duties those stand for, as a Markdown table
/// for machines/README.md (a test keeps the committed copy current).
pub fn duty_table() -> String {
    use crate::{Input, Trigger, step};
    use std::fmt::Write;
    let mut out = String::from(
        "| from | trigger | to | outputs | duties of the outputs | duties the new phase keeps |\n\
         |---|---|---|---|---|---|\n",
    );
    for from in Phase::ALL {
        for trigger in Trigger::ALL {
            let Some(t) = step(from, &Input::new(trigger, 0)) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {from} | {trigger} | {} | {} | {} | {} |",
                t.to,
                list(t.outputs.iter()),
                list(t.outputs.iter().flat_map(|a| a.duties())),
                list(t.to.keeps().iter()),
            );
        }
    }
    out
}

fn list<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let names: Vec<String> = items.map(|i| i.to_string()).collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}
