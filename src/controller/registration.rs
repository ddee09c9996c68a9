//! Who owns the Auth registration of a tenant's name, told by the journal.
//!
//! The Auth API has no owner field: `POST /api/tenants` answers 409 for any existing name,
//! whoever registered it. So the operator writes down its intent before it asks: when
//! Redis is ready it lists Auth's tenants (`GET /api/tenants`), and only if the name is
//! free does it journal the transition into `ProvisioningServer`, whose outputs ask for
//! the Registration duty (`neurallog_machines::intends_registration`). Every `POST` comes
//! after that record. Hence:
//!
//! - a tenant whose journal holds the intent owns the name: a 409 answered to it is its
//!   own earlier `POST` (the process died after Auth registered the name but before the
//!   operator learned it, or a retried `POST` whose first attempt timed out), and
//!   deleting the Tenant deregisters the name;
//! - a name Auth knew before any intent is someone else's: the tenant fails with
//!   `RegistrationExists`, is never registered, and deleting it calls no `DELETE`;
//! - a tenant that never got that far (a namespace conflict, an invalid spec) has no
//!   registration to remove either.
//!
//! The race that remains: between the `GET` that saw the name free and this tenant's
//! `POST`, someone else may register the same name. The `POST` then answers 409, which
//! the operator takes for its own, and deleting the Tenant would deregister the other
//! party's registration. Closing it needs an owner (or a compare-and-set) in the Auth API;
//! the window is one `GET` and one journal append long.

use super::observation::AuthState;
use super::{Context, Error};
use crate::auth::AuthError;
use crate::crd::{Tenant, TenantStatus};
use crate::journal::Record;
use kube::ResourceExt;
use neurallog_machines::{Phase, Trigger, intends_registration};

/// Reason of the condition, the Failed transition's Event and the status when Auth
/// already knew the tenant's name before this tenant asked for it.
pub const REGISTRATION_EXISTS: &str = "RegistrationExists";

/// The status condition that records the registration.
pub const CONDITION: &str = "AuthRegistered";

/// Whose the Auth registration of the tenant's name is, as the journal tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ownership {
    /// No intent journaled: this tenant has not asked Auth for its name.
    #[default]
    None,
    /// The intent is journaled: the name is this tenant's to register and to deregister.
    Ours,
    /// Auth knew the name before this tenant asked: not adopted, never deregistered.
    Foreign,
}

/// What this pass's `GET /api/tenants` said of the tenant's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NameCheck {
    #[default]
    NotChecked,
    Free,
    Taken,
}

impl Ownership {
    /// The ownership after `record`.
    pub fn after(self, record: &Record) -> Ownership {
        if intends_registration(&record.outputs) {
            Ownership::Ours
        } else if record.input.trigger == Trigger::RegistrationExists {
            Ownership::Foreign
        } else {
            self
        }
    }

    /// The ownership a chain's records tell. A chain that retention compacted may have
    /// lost the intent: it started where the intent must have been taken (a phase only
    /// reachable through `ProvisioningServer`), or the status last said so. So may a chain
    /// begun in a journal that replaced a damaged one (`journal_replaced`): the intent is in
    /// the copy kept aside, and the status written before the damage still tells it.
    pub fn of_chain<'a>(
        records: impl IntoIterator<Item = &'a Record>,
        status: Option<&TenantStatus>,
        journal_replaced: bool,
    ) -> Ownership {
        let mut records = records.into_iter().peekable();
        let compacted_from = records.peek().filter(|r| r.seq > 1).map(|r| r.from);
        let start = match compacted_from {
            Some(
                Phase::ProvisioningServer | Phase::Running | Phase::Updating | Phase::Degraded,
            ) => Ownership::Ours,
            _ => Ownership::None,
        };
        let told = records.fold(start, Ownership::after);
        let history_partial = compacted_from.is_some() || journal_replaced;
        if told == Ownership::None && history_partial && status_says_ours(status) {
            return Ownership::Ours;
        }
        told
    }
}

/// The status this operator wrote says the registration is the tenant's.
fn status_says_ours(status: Option<&TenantStatus>) -> bool {
    status
        .into_iter()
        .flat_map(|s| s.conditions.iter())
        .any(|c| c.type_ == CONDITION && matches!(c.reason.as_str(), "Registered" | "Registering"))
}

/// Whether this pass must ask Auth whether the name is free: before the intent (Redis is
/// ready, the transition that records the intent is next), and while the tenant failed
/// because the name was taken (to notice it became free).
pub fn needs_name_check(phase: Phase, ownership: Ownership, redis_ready: bool) -> bool {
    match phase {
        Phase::ProvisioningRedis => redis_ready && ownership != Ownership::Ours,
        Phase::Failed => ownership == Ownership::Foreign,
        _ => false,
    }
}

/// The message of a name Auth already knew: what it means and what the user can do.
pub fn exists_message() -> String {
    "the Auth service already has a tenant of this name that this Tenant did not register \
     (another cluster or an earlier installation may use it); the operator neither adopts \
     nor deregisters it. Give the Tenant another name, or, if that registration is stale, \
     delete it from the Auth service: the operator checks every minute and then provisions \
     the tenant"
        .to_string()
}

impl Context {
    /// The tenant's ownership, read from its journal once per process and kept current
    /// by [`Context::note_registration`] on every append.
    /// `tail`: the chain's last record (`None`: the chain is empty, nothing to read).
    pub(super) async fn ownership(
        &self,
        tenant: &Tenant,
        uid: &str,
        tail: Option<&Record>,
    ) -> Result<Ownership, Error> {
        if let Some(known) = self.memo(tenant, |m| m.ownership) {
            return Ok(known);
        }
        let records: Vec<Record> = match tail {
            None => Vec::new(),
            Some(_) => {
                let chain = uid.to_string();
                self.blocking(move |j| j.history(&chain).collect()).await?
            }
        };
        let ownership =
            Ownership::of_chain(&records, tenant.status.as_ref(), self.recovery.is_some());
        self.memo(tenant, |m| m.ownership = Some(ownership));
        Ok(ownership)
    }

    /// The ownership as last read or journaled (`None` before the first read).
    pub fn known_ownership(&self, tenant: &Tenant) -> Ownership {
        self.memo(tenant, |m| m.ownership).unwrap_or_default()
    }

    pub(super) fn note_registration(&self, tenant: &Tenant, record: &Record) {
        self.memo(tenant, |m| {
            m.ownership = Some(m.ownership.unwrap_or_default().after(record));
        });
    }

    /// Asks Auth whether the tenant's name is registered. A failure is remembered as the
    /// Auth state (the status shows it), sent once as a Warning Event, and returned.
    pub(super) async fn check_name(
        &self,
        tenant: &Tenant,
        seq: u64,
    ) -> Result<NameCheck, AuthError> {
        let name = tenant.name_any();
        match self.auth.list().await {
            Ok(names) => {
                if matches!(self.auth_state(tenant), AuthState::Failed { .. }) {
                    self.set_auth_state(tenant, AuthState::Unknown);
                }
                Ok(if names.contains(&name) {
                    NameCheck::Taken
                } else {
                    NameCheck::Free
                })
            }
            Err(error) => {
                self.set_auth_state(
                    tenant,
                    AuthState::Failed {
                        reason: error.reason().to_string(),
                        message: error.to_string(),
                    },
                );
                let message = error.to_string();
                self.warn_once(tenant, seq, error.reason(), &message, &message)
                    .await;
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Digest;
    use neurallog_machines::{Action, Input};

    fn record(seq: u64, from: Phase, trigger: Trigger, to: Phase, outputs: &[Action]) -> Record {
        Record {
            tenant: "acme".into(),
            uid: "u".into(),
            seq,
            time: chrono::Utc::now(),
            generation: 1,
            from,
            input: Input::new(trigger, 1),
            to,
            outputs: outputs.to_vec(),
            message: String::new(),
            spec_digest: String::new(),
            prev_hash: Digest::default(),
            hash: Digest::default(),
        }
    }

    fn to_provisioning_redis() -> Vec<Record> {
        vec![
            record(
                1,
                Phase::New,
                Trigger::Observed,
                Phase::Pending,
                &[Action::CreateNamespace],
            ),
            record(
                2,
                Phase::Pending,
                Trigger::NamespaceReady,
                Phase::ProvisioningRedis,
                &[Action::ProvisionRedis],
            ),
        ]
    }

    #[test]
    fn the_intent_makes_the_name_ours_and_deletion_keeps_it() {
        let mut chain = to_provisioning_redis();
        assert_eq!(Ownership::of_chain(&chain, None, false), Ownership::None);
        chain.push(record(
            3,
            Phase::ProvisioningRedis,
            Trigger::RedisReady,
            Phase::ProvisioningServer,
            &[Action::ProvisionServer],
        ));
        assert_eq!(Ownership::of_chain(&chain, None, false), Ownership::Ours);
        chain.push(record(
            4,
            Phase::ProvisioningServer,
            Trigger::DeletionRequested,
            Phase::Deleting,
            &[Action::Teardown],
        ));
        assert_eq!(Ownership::of_chain(&chain, None, false), Ownership::Ours);
    }

    #[test]
    fn a_name_taken_before_the_intent_is_foreign_until_an_intent_follows() {
        let mut chain = to_provisioning_redis();
        chain.push(record(
            3,
            Phase::ProvisioningRedis,
            Trigger::RegistrationExists,
            Phase::Failed,
            &[Action::ReportRegistrationExists],
        ));
        assert_eq!(Ownership::of_chain(&chain, None, false), Ownership::Foreign);
        chain.push(record(
            4,
            Phase::Failed,
            Trigger::DeletionRequested,
            Phase::Deleting,
            &[Action::Teardown],
        ));
        assert_eq!(Ownership::of_chain(&chain, None, false), Ownership::Foreign);
    }

    #[test]
    fn a_namespace_conflict_never_owns_a_registration() {
        let chain = [
            record(
                1,
                Phase::New,
                Trigger::SpecInvalid,
                Phase::Failed,
                &[Action::ReportFailure],
            ),
            record(
                2,
                Phase::Failed,
                Trigger::DeletionRequested,
                Phase::Deleting,
                &[Action::Teardown],
            ),
        ];
        assert_eq!(Ownership::of_chain(&chain, None, false), Ownership::None);
    }

    #[test]
    fn a_compacted_chain_keeps_what_its_start_or_status_tells() {
        let running = [record(
            7,
            Phase::Running,
            Trigger::DeletionRequested,
            Phase::Deleting,
            &[Action::Teardown],
        )];
        assert_eq!(Ownership::of_chain(&running, None, false), Ownership::Ours);

        let failed = [record(
            7,
            Phase::Failed,
            Trigger::DeletionRequested,
            Phase::Deleting,
            &[Action::Teardown],
        )];
        assert_eq!(Ownership::of_chain(&failed, None, false), Ownership::None);
        let status = |reason: &str| TenantStatus {
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: CONDITION.into(),
                status: "True".into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Default::default(),
                ),
            }],
            ..TenantStatus::default()
        };
        assert_eq!(
            Ownership::of_chain(&failed, Some(&status("Registered")), false),
            Ownership::Ours
        );
        assert_eq!(
            Ownership::of_chain(&failed, Some(&status(REGISTRATION_EXISTS)), false),
            Ownership::None
        );
        // A whole chain is its own witness: the status is not consulted.
        assert_eq!(
            Ownership::of_chain(&to_provisioning_redis(), Some(&status("Registered")), false),
            Ownership::None
        );
        // Unless the journal replaced a damaged one: the chain begun afresh holds no intent,
        // and the status written before the damage tells whose the registration is.
        assert_eq!(
            Ownership::of_chain(&to_provisioning_redis(), Some(&status("Registered")), true),
            Ownership::Ours
        );
        assert_eq!(
            Ownership::of_chain(&to_provisioning_redis(), None, true),
            Ownership::None
        );
    }

    #[test]
    fn the_name_is_checked_only_before_the_intent_or_while_it_is_taken() {
        assert!(needs_name_check(
            Phase::ProvisioningRedis,
            Ownership::None,
            true
        ));
        assert!(!needs_name_check(
            Phase::ProvisioningRedis,
            Ownership::None,
            false
        ));
        assert!(!needs_name_check(
            Phase::ProvisioningRedis,
            Ownership::Ours,
            true
        ));
        assert!(needs_name_check(
            Phase::ProvisioningRedis,
            Ownership::Foreign,
            true
        ));
        assert!(needs_name_check(Phase::Failed, Ownership::Foreign, false));
        assert!(!needs_name_check(Phase::Failed, Ownership::None, false));
        for phase in [Phase::ProvisioningServer, Phase::Running, Phase::Deleting] {
            assert!(!needs_name_check(phase, Ownership::None, true), "{phase}");
        }
    }
}
