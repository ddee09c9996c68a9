//! The reconciler. Each pass, in this order (see the design notes):
//! observe -> derive the machine input -> transition -> journal (durable) -> apply what the
//! phase needs -> mirror to Events and status. A crash between any two steps converges on
//! the next pass: the journal is the truth for phase, the cluster for objects.
//!
//! | module | what it holds |
//! |---|---|
//! | `pass` | the pass itself, top to bottom, and what it asks of the controller next |
//! | `context` | what passes share, and what is remembered per tenant between passes |
//! | `observe` ([`observation`], [`failures`]) | what exists and is ready, read from the caches |
//! | [`input`] | observation -> the machine's input (pure) |
//! | [`pause`] | the annotation that pauses a tenant, and how to resume it |
//! | [`registration`] | whose the Auth registration of the tenant's name is (journaled intent) |
//! | [`apply`] ([`compare`]) | the objects the current phase needs, written only when different |
//! | [`storage`] | growing the Redis volume in place: when to ask, replace, wait or refuse |
//! | `mirror` ([`events`], [`status`]) | Events of journaled transitions, Warning Events, status |
//! | `cache` | the watch caches: objects kept as JSON, read by name or by namespace |
//! | `lean` | objects decoded without the fields no pass reads (managed fields, pod specs) |
//! | `runtime` | watch caches, what triggers a pass, readiness, backoff |
//! | `triggers` | which events of owned objects and pods start a pass |
//! | `own_writes` | the operator's own writes whose watch events start no pass |
//! | `error` | what a pass can fail with |

pub mod apply;
pub mod compare;
pub mod events;
pub mod failures;
pub mod input;
pub mod observation;
pub mod pause;
pub mod registration;
pub mod status;
pub mod storage;

mod cache;
mod context;
mod error;
mod lean;
mod mirror;
mod observe;
mod own_writes;
mod pass;
mod runtime;
#[cfg(test)]
mod tests;
mod triggers;
mod verdicts;
mod volume_retention;

pub use cache::Cache;
pub use context::{Context, Stores};
pub use error::Error;
pub use pass::{error_policy, reconcile};
pub use runtime::{managed_selector, run};

use crate::crd::{Tenant, TenantStatus};
use std::time::Duration;

pub const FINALIZER: &str = "neurallog.io/finalizer";

/// Reason of the Warning Event (and error metric) while the journal cannot be written.
pub const JOURNAL_UNWRITABLE: &str = "JournalUnwritable";

/// Reason of the Warning Event telling a tenant that a damaged journal was replaced.
pub const JOURNAL_RECOVERED: &str = "JournalRecovered";

/// Transitions one pass takes at most before it mirrors status and yields to the queue:
/// a pass whose objects already allow the next transition takes it (see `pass`).
const DEFAULT_TRANSITIONS_PER_PASS: u32 = 4;

/// How soon a pass that made the next transition possible is followed by the one taking it.
const NEXT_TRANSITION_DELAY: Duration = Duration::from_millis(100);

/// The progress deadline unless the operator is told otherwise.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// How often a Failed tenant is looked at again (its conflicting namespace may be gone).
const FAILED_RECHECK: Duration = Duration::from_secs(60);

/// How often a Stalled tenant tries again without being asked (a change of the Tenant or
/// of its objects and pods brings a pass at once).
const STALLED_RECHECK: Duration = Duration::from_secs(300);

/// How soon an Event that could not be written is tried again.
const EVENT_RETRY: Duration = Duration::from_secs(5);

/// Failed Events kept per tenant for a retry; more are dropped (and counted as failed).
const MAX_PENDING_EVENTS: usize = 32;

/// Reason of the error metric counting Event writes that failed.
pub const EVENT_WRITE_FAILED: &str = "EventWriteFailed";

#[doc(hidden)]
pub fn status_of(tenant: &Tenant) -> Option<&TenantStatus> {
    tenant.status.as_ref()
}
