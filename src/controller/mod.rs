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
//! | [`apply`] ([`compare`]) | the objects the current phase needs, written only when different |
//! | `mirror` ([`events`], [`status`]) | Events of journaled transitions, Warning Events, status |
//! | `runtime` | watch caches, what triggers a pass, readiness, backoff |
//! | `error` | what a pass can fail with |

pub mod apply;
pub mod compare;
pub mod events;
pub mod failures;
pub mod input;
pub mod observation;
pub mod status;

mod context;
mod error;
mod mirror;
mod observe;
mod pass;
mod runtime;
#[cfg(test)]
mod tests;

pub use context::{Context, Stores};
pub use error::Error;
use error::source_code;
pub use pass::{error_policy, reconcile};
pub use runtime::{managed_selector, run};

use crate::auth::{AuthClient, AuthError};
use crate::crd::{Tenant, TenantStatus, namespace_for};
use crate::journal::slot::JournalSlot;
use crate::journal::{
    Journal, JournalError, NewRecord, Record, RecoveryMark, record_time, spec_digest,
};
use crate::metrics::{Metrics, ResultLabel};
use crate::render::{self, RenderError, RenderSettings};
use apply::{Applier, create_event};
use chrono::Utc;
use events::EventType;
use futures::{Stream, StreamExt};
use input::{TenantFacts, derive_input};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use neurallog_machines::{Phase, step};
use observation::{AuthState, Observation, deployment_state, namespace_state, statefulset_state};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{Instrument, info, info_span, warn};

pub const FINALIZER: &str = "neurallog.io/finalizer";

/// Reason of the Warning Event (and error metric) while the journal cannot be written.
pub const JOURNAL_UNWRITABLE: &str = "JournalUnwritable";

/// Reason of the Warning Event telling a tenant that a damaged journal was replaced.
pub const JOURNAL_RECOVERED: &str = "JournalRecovered";

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
