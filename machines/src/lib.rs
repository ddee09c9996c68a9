//! The NeuralLog tenant phase machine.
//!
//! Pure and deterministic: no I/O, no clock, no randomness. The operator derives a
//! [`Trigger`] from what it observes, feeds it here, journals the resulting [`Transition`],
//! and only then acts. Replay feeds journaled inputs through the same function.

use serde::{Deserialize, Serialize};
use std::fmt;

mod diagram;
mod duties;
pub use diagram::mermaid;
pub use duties::{Duty, duty_table, intends_registration, plan};

/// Where a tenant is in its life. `New` is the state before the first journal record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    New,
    Pending,
    ProvisioningRedis,
    ProvisioningServer,
    Running,
    Updating,
    Degraded,
    Failed,
    Deleting,
    Deleted,
    /// No progress within the deadline, or a failure that will not pass by itself; the
    /// operator keeps trying and leaves when progress resumes or the spec changes.
    Stalled,
    /// The user paused the tenant: the operator changes nothing of it (no apply, no delete,
    /// no Auth call) until it is resumed, or deleted.
    Paused,
}

/// The observed fact that drives a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Trigger {
    /// The operator saw the Tenant for the first time.
    Observed,
    /// The tenant namespace exists, is ours and is active.
    NamespaceReady,
    /// Every Redis replica is ready at the current spec.
    RedisReady,
    /// Redis and the server are ready at the current spec and Auth knows the tenant.
    AllReady,
    /// The spec changed (a new generation) after the tenant was running.
    SpecChanged,
    /// A component that was ready no longer is.
    ComponentLost,
    /// The spec cannot be realised (invalid, or the namespace belongs to someone else).
    SpecInvalid,
    /// What made the spec unrealisable is gone.
    ProblemResolved,
    /// The Tenant has a deletion timestamp.
    DeletionRequested,
    /// The namespace is gone and Auth no longer knows the tenant.
    CleanupDone,
    /// No progress within the progress deadline, or a write the API server refuses.
    ProgressStalled,
    /// A stalled tenant made progress again (more replicas ready than when it stalled).
    ProgressResumed,
    /// Before this tenant asked Auth to register its name, Auth already knew it: someone
    /// else's registration, never adopted (and so never deregistered).
    RegistrationExists,
    /// The Tenant carries the annotation `neurallog.io/paused: "true"`.
    PauseRequested,
    /// A paused Tenant no longer carries that annotation (or it is not `"true"`).
    ResumeRequested,
}

/// What the operator must do after a transition: journaled with it, and carried out by the
/// applier as the [`Duty`]s of [`Action::duties`] (see [`plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    CreateNamespace,
    ProvisionRedis,
    ProvisionServer,
    MarkRunning,
    RollOutUpdate,
    MarkDegraded,
    ReportFailure,
    Teardown,
    ReleaseFinalizer,
    ReportStall,
    ReportRegistrationExists,
    ReportPaused,
}

mod fsm {
    use rust_fsm::state_machine;

    state_machine! {
        #[state_machine(input(crate::Trigger), state(crate::Phase), output(crate::Action))]
        pub tenant(New)

        New => {
            Observed => Pending [CreateNamespace],
            SpecInvalid => Failed [ReportFailure],
            DeletionRequested => Deleting [Teardown],
            PauseRequested => Paused [ReportPaused],
        },
        Pending => {
            NamespaceReady => ProvisioningRedis [ProvisionRedis],
            SpecInvalid => Failed [ReportFailure],
            DeletionRequested => Deleting [Teardown],
            ProgressStalled => Stalled [ReportStall],
            PauseRequested => Paused [ReportPaused],
        },
        ProvisioningRedis => {
            RedisReady => ProvisioningServer [ProvisionServer],
            RegistrationExists => Failed [ReportRegistrationExists],
            SpecInvalid => Failed [ReportFailure],
            DeletionRequested => Deleting [Teardown],
            ProgressStalled => Stalled [ReportStall],
            PauseRequested => Paused [ReportPaused],
        },
        ProvisioningServer => {
            AllReady => Running [MarkRunning],
            SpecInvalid => Failed [ReportFailure],
            DeletionRequested => Deleting [Teardown],
            ProgressStalled => Stalled [ReportStall],
            PauseRequested => Paused [ReportPaused],
        },
        Running => {
            SpecChanged => Updating [RollOutUpdate],
            ComponentLost => Degraded [MarkDegraded],
            SpecInvalid => Failed [ReportFailure],
            DeletionRequested => Deleting [Teardown],
            PauseRequested => Paused [ReportPaused],
        },
        Updating => {
            AllReady => Running [MarkRunning],
            SpecChanged => Updating [RollOutUpdate],
            SpecInvalid => Failed [ReportFailure],
            DeletionRequested => Deleting [Teardown],
            ProgressStalled => Stalled [ReportStall],
            PauseRequested => Paused [ReportPaused],
        },
        Degraded => {
            AllReady => Running [MarkRunning],
            SpecChanged => Updating [RollOutUpdate],
            SpecInvalid => Failed [ReportFailure],
            DeletionRequested => Deleting [Teardown],
            ProgressStalled => Stalled [ReportStall],
            PauseRequested => Paused [ReportPaused],
        },
        Stalled => {
            AllReady => Running [MarkRunning],
            SpecChanged => Updating [RollOutUpdate],
            ProgressResumed => Pending [CreateNamespace],
            SpecInvalid => Failed [ReportFailure],
            DeletionRequested => Deleting [Teardown],
            PauseRequested => Paused [ReportPaused],
        },
        Failed => {
            ProblemResolved => Pending [CreateNamespace],
            DeletionRequested => Deleting [Teardown],
            PauseRequested => Paused [ReportPaused],
        },
        // Resuming starts again where every fact is re-derived, as after a failure: each
        // step follows at once where its resources are already there.
        Paused => {
            ResumeRequested => Pending [CreateNamespace],
            DeletionRequested => Deleting [Teardown],
        },
        Deleting(CleanupDone) => Deleted [ReleaseFinalizer],
    }
}

use rust_fsm::StateMachineImpl;

/// Replica counts of one component as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: i32,
    pub desired: i32,
}

impl Readiness {
    pub fn new(ready: i32, desired: i32) -> Self {
        Self { ready, desired }
    }
}

/// The input the machine consumed, with the facts that decided it. This is what the
/// journal records (never the observed objects, which may hold secrets).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    pub trigger: Trigger,
    /// The Tenant's `metadata.generation` when the input was derived.
    pub generation: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<Readiness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Readiness>,
    /// Why, for inputs that carry a reason (invalid spec, lost component).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Input {
    pub fn new(trigger: Trigger, generation: i64) -> Self {
        Self {
            trigger,
            generation,
            redis: None,
            server: None,
            reason: None,
        }
    }

    pub fn with_readiness(mut self, redis: Readiness, server: Readiness) -> Self {
        self.redis = Some(redis);
        self.server = Some(server);
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// One step of the machine: the journal's unit of record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Phase,
    pub to: Phase,
    pub outputs: Vec<Action>,
    pub message: String,
}

/// The transition `input` causes in `phase`, or `None` when it causes none.
pub fn step(phase: Phase, input: &Input) -> Option<Transition> {
    let to = fsm::tenant::Impl::transition(&phase, &input.trigger)?;
    let outputs = fsm::tenant::Impl::output(&phase, &input.trigger)
        .into_iter()
        .collect();
    Some(Transition {
        from: phase,
        to,
        outputs,
        message: message(to, input),
    })
}

/// Whether `trigger` moves a tenant out of `phase` (or back into it).
pub fn accepts(phase: Phase, trigger: Trigger) -> bool {
    fsm::tenant::Impl::transition(&phase, &trigger).is_some()
}

/// The human-readable message of the transition into `to`, mirrored to Events and status.
pub fn message(to: Phase, input: &Input) -> String {
    let reason = input.reason.as_deref().unwrap_or("unknown reason");
    match to {
        Phase::New => "Tenant not yet observed".to_string(),
        Phase::Pending if input.trigger == Trigger::ResumeRequested => {
            "Tenant resumed; checking its resources again from the namespace up".to_string()
        }
        Phase::Pending => "Tenant accepted; creating its namespace".to_string(),
        Phase::ProvisioningRedis => "Namespace is ready; provisioning Redis".to_string(),
        Phase::ProvisioningServer => "Redis is ready; provisioning the server".to_string(),
        Phase::Running => "Tenant is running".to_string(),
        Phase::Updating => format!(
            "Spec changed (generation {}); rolling out the update",
            input.generation
        ),
        Phase::Degraded => format!("Tenant is degraded: {reason}"),
        Phase::Failed => format!("Tenant cannot be provisioned: {reason}"),
        Phase::Deleting => "Tenant is being deleted".to_string(),
        Phase::Deleted => "Tenant resources are gone; releasing the finalizer".to_string(),
        Phase::Stalled => format!("Tenant is stalled: {reason}"),
        Phase::Paused => match input.reason.as_deref() {
            Some(resume) => format!(
                "Tenant is paused: the operator changes none of its resources until it is resumed with `{resume}`"
            ),
            None => "Tenant is paused: the operator changes none of its resources until the annotation neurallog.io/paused is removed".to_string(),
        },
    }
}

impl Phase {
    pub const ALL: [Phase; 12] = [
        Phase::New,
        Phase::Pending,
        Phase::ProvisioningRedis,
        Phase::ProvisioningServer,
        Phase::Running,
        Phase::Updating,
        Phase::Degraded,
        Phase::Failed,
        Phase::Deleting,
        Phase::Deleted,
        Phase::Stalled,
        Phase::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::New => "New",
            Phase::Pending => "Pending",
            Phase::ProvisioningRedis => "ProvisioningRedis",
            Phase::ProvisioningServer => "ProvisioningServer",
            Phase::Running => "Running",
            Phase::Updating => "Updating",
            Phase::Degraded => "Degraded",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
            Phase::Deleted => "Deleted",
            Phase::Stalled => "Stalled",
            Phase::Paused => "Paused",
        }
    }

    /// Phases a user should look at: mirrored as Warning Events.
    pub fn is_warning(self) -> bool {
        matches!(self, Phase::Degraded | Phase::Failed | Phase::Stalled)
    }

    /// Phases that wait for the cluster to make progress, under the progress deadline.
    pub fn awaits_progress(self) -> bool {
        matches!(
            self,
            Phase::Pending
                | Phase::ProvisioningRedis
                | Phase::ProvisioningServer
                | Phase::Updating
                | Phase::Degraded
        )
    }

    /// Phases in which the tenant's resources should exist and be kept as the spec says.
    pub fn is_provisioned_or_provisioning(self) -> bool {
        matches!(
            self,
            Phase::Pending
                | Phase::ProvisioningRedis
                | Phase::ProvisioningServer
                | Phase::Running
                | Phase::Updating
                | Phase::Degraded
                | Phase::Stalled
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown phase {s:?}"))
    }
}

impl Trigger {
    pub const ALL: [Trigger; 15] = [
        Trigger::Observed,
        Trigger::NamespaceReady,
        Trigger::RedisReady,
        Trigger::AllReady,
        Trigger::SpecChanged,
        Trigger::ComponentLost,
        Trigger::SpecInvalid,
        Trigger::ProblemResolved,
        Trigger::DeletionRequested,
        Trigger::CleanupDone,
        Trigger::ProgressStalled,
        Trigger::ProgressResumed,
        Trigger::RegistrationExists,
        Trigger::PauseRequested,
        Trigger::ResumeRequested,
    ];
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Feeds `inputs` through the machine from `start`, keeping only the inputs that caused a
/// transition. Deterministic: the same inputs always give the same transitions.
pub fn run<'a>(start: Phase, inputs: impl IntoIterator<Item = &'a Input>) -> Vec<Transition> {
    let mut phase = start;
    let mut out = Vec::new();
    for input in inputs {
        if let Some(t) = step(phase, input) {
            phase = t.to;
            out.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests;
