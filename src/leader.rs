//! Leader election on a `coordination.k8s.io/v1` Lease, after client-go's `leaderelection`:
//! only the holder runs the controller, so two replicas (a rollout, a mistaken scale-up)
//! never reconcile the same tenant against two journals.
//!
//! Every write is a `replace` guarded by the resourceVersion just read, so two candidates
//! never both win. Expiry is judged by this process's own clock from when it last saw the
//! Lease change (not from `renewTime`), which makes clock skew between nodes harmless. The
//! leader renews every retry period and gives up when it cannot renew within the renew
//! deadline, which is shorter than the lease duration: it stops leading before anyone may
//! take over.
//!
//! The holder also advertises where its journal API is, in the Lease's
//! [`JOURNAL_URL_ANNOTATION`]: a waiting replica that follows the leader's journal
//! (`crate::journal::follow`) reads it from the Lease it polls anyway.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// Who this process is in `holderIdentity`; unique per replica.
    pub identity: String,
    /// How long a lease stays valid after its last renewal, as written into the Lease.
    pub lease_duration: Duration,
    /// How long the leader keeps failing to renew before it stops leading.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews.
    pub retry_period: Duration,
    /// The URL of this replica's journal API, advertised on the Lease while it leads.
    pub journal_url: Option<String>,
}

/// The Lease annotation holding the leader's journal API URL.
pub const JOURNAL_URL_ANNOTATION: &str = "neurallog.io/journal-url";

/// `annotations` with the journal URL set to `url` (removed when `None`).
fn advertised(
    annotations: Option<BTreeMap<String, String>>,
    url: Option<&str>,
) -> Option<BTreeMap<String, String>> {
    let mut annotations = annotations.unwrap_or_default();
    match url {
        Some(url) => annotations.insert(JOURNAL_URL_ANNOTATION.to_owned(), url.to_owned()),
        None => annotations.remove(JOURNAL_URL_ANNOTATION),
    };
    (!annotations.is_empty()).then_some(annotations)
}

/// The journal URL a Lease advertises.
fn journal_url_of(lease: &Lease) -> Option<String> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(JOURNAL_URL_ANNOTATION)
        .filter(|url| !url.is_empty())
        .cloned()
}

impl LeaseConfig {
    /// The ordering that makes the election safe: retry < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), String> {
        if self.identity.is_empty() {
            return Err("the leader election identity must not be empty".into());
        }
        if self.lease_duration.as_secs() < 1 || self.lease_duration.as_secs() > i32::MAX as u64 {
            return Err("the lease duration must be a positive number of seconds".into());
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err("the retry period must be above zero and below the renew deadline".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err("the renew deadline must be below the lease duration".into());
        }
        Ok(())
    }

    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// What to do about the Lease as last read.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free, released or expired: take it.
    TakeOver,
    /// Someone else holds it for (at least) this long.
    Wait {
        holder: String,
        for_at_most: Duration,
    },
}

/// When this process last saw the Lease change (any write bumps its resourceVersion).
#[derive(Debug)]
struct Observed {
    resource_version: Option<String>,
    at: Instant,
}

fn holder_of(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

fn decide(spec: &LeaseSpec, identity: &str, changed_at: Instant, now: Instant) -> Decision {
    let Some(holder) = holder_of(spec) else {
        return Decision::TakeOver;
    };
    if holder == identity {
        return Decision::Renew;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    let expires = changed_at + duration;
    if expires <= now {
        Decision::TakeOver
    } else {
        Decision::Wait {
            holder: holder.to_string(),
            for_at_most: expires - now,
        }
    }
}

/// The spec after `identity` renews or takes over `current`.
fn held_spec(current: &LeaseSpec, config: &LeaseConfig, now: Timestamp) -> LeaseSpec {
    let renewing = holder_of(current) == Some(config.identity.as_str());
    let transitions = current.lease_transitions.unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration_seconds()),
        acquire_time: if renewing {
            current.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if renewing {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..current.clone()
    }
}

/// The spec of a released lease: no holder, so the next candidate need not wait.
fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: None,
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// The outcome of one acquire-or-renew attempt.
#[derive(Debug)]
enum Attempt {
    Leading,
    HeldBy {
        holder: String,
        for_at_most: Duration,
        /// Where the holder's journal API is, if it says.
        journal_url: Option<String>,
    },
    /// Another writer changed the Lease between our read and write; read again.
    Conflict,
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Observed,
}

impl Elector {
    fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Observed {
                resource_version: None,
                at: Instant::now(),
            },
        }
    }

    /// `namespace/name`, for logs.
    fn lease_ref(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    fn observe(&mut self, lease: &Lease) {
        if lease.metadata.resource_version != self.observed.resource_version {
            self.observed = Observed {
                resource_version: lease.metadata.resource_version.clone(),
                at: Instant::now(),
            };
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            return self.create().await;
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        match decide(
            &spec,
            &self.config.identity,
            self.observed.at,
            Instant::now(),
        ) {
            Decision::Wait {
                holder,
                for_at_most,
            } => Ok(Attempt::HeldBy {
                holder,
                for_at_most,
                journal_url: journal_url_of(&lease),
            }),
            Decision::Renew | Decision::TakeOver => {
                let spec = held_spec(&spec, &self.config, Timestamp::now());
                self.write(lease, spec).await
            }
        }
    }

    async fn create(&mut self) -> Result<Attempt, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                annotations: advertised(None, self.config.journal_url.as_deref()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                lease_transitions: Some(0),
                ..held_spec(&LeaseSpec::default(), &self.config, Timestamp::now())
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                self.observe(&created);
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Replaces the Lease read as `lease` (its resourceVersion guards the write).
    async fn write(&mut self, mut lease: Lease, spec: LeaseSpec) -> Result<Attempt, kube::Error> {
        lease.metadata.annotations = advertised(
            lease.metadata.annotations.take(),
            self.config.journal_url.as_deref(),
        );
        let updated = Lease {
            spec: Some(spec),
            ..lease
        };
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => {
                self.observe(&written);
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Waits until this process holds the lease, telling `leader_journal` where the
    /// holder's journal API is meanwhile. Errors (a missing permission, the API server
    /// away) are logged and retried: the process stays alive and not ready.
    async fn acquire(&mut self, leader_journal: &watch::Sender<Option<String>>) {
        let mut last_holder = None;
        loop {
            let wait = match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    leader_journal.send_replace(None);
                    return;
                }
                Ok(Attempt::Conflict) => self.config.retry_period,
                Ok(Attempt::HeldBy {
                    holder,
                    for_at_most,
                    journal_url,
                }) => {
                    leader_journal.send_if_modified(|url| {
                        let changed = *url != journal_url;
                        *url = journal_url;
                        changed
                    });
                    if last_holder.as_ref() != Some(&holder) {
                        info!(%holder, lease = %self.lease_ref(), "waiting for the leader lease");
                        last_holder = Some(holder);
                    }
                    // Try again right when it would expire if its holder stopped renewing.
                    for_at_most.min(self.config.retry_period)
                }
                Err(e) => {
                    warn!(error = %e, lease = %self.lease_ref(), "cannot read or write the leader lease");
                    self.config.retry_period
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Renews every retry period until `step_down` fires (then releases) or the lease is
    /// lost: taken by another holder, or not renewed within the renew deadline.
    async fn keep(mut self, mut step_down: oneshot::Receiver<()>) -> Outcome {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = &mut step_down => {
                    self.release().await;
                    return Outcome::Released;
                }
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
            let left = self.config.renew_deadline.saturating_sub(renewed.elapsed());
            // The lease is valid from when the renewal was sent, not answered: others
            // count from a moment no earlier than the write.
            let sent = Instant::now();
            let attempt = tokio::time::timeout(left, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(Attempt::Leading)) => renewed = sent,
                Ok(Ok(Attempt::HeldBy { holder, .. })) => {
                    return Outcome::Lost(format!("the lease is now held by {holder}"));
                }
                Ok(Ok(Attempt::Conflict)) => {}
                Ok(Err(e)) => warn!(error = %e, "cannot renew the leader lease"),
                Err(_) => {}
            }
            if renewed.elapsed() >= self.config.renew_deadline {
                return Outcome::Lost(format!(
                    "not renewed within the renew deadline ({:?})",
                    self.config.renew_deadline
                ));
            }
        }
    }

    /// Clears the holder so the next candidate takes over without waiting for expiry.
    async fn release(&self) {
        match self.try_release().await {
            Ok(true) => info!(lease = %self.lease_ref(), "released the leader lease"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot release the leader lease; it expires on its own"),
        }
    }

    /// Only if we still hold it, and guarded by the resourceVersion like every write.
    async fn try_release(&self) -> Result<bool, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if holder_of(&spec) != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        let released = Lease {
            spec: Some(released_spec(&spec, Timestamp::now())),
            ..lease
        };
        self.api
            .replace(&self.config.name, &PostParams::default(), &released)
            .await?;
        Ok(true)
    }
}

#[derive(Debug)]
enum Outcome {
    Released,
    Lost(String),
}

/// The lease, held: renewed in the background until stepped down or lost.
pub struct Leadership {
    renewal: JoinHandle<Outcome>,
    step_down: Option<oneshot::Sender<()>>,
}

/// Why leadership ended without a step-down.
#[derive(Debug)]
pub struct LostLease(pub String);

impl std::fmt::Display for LostLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Waits (forever, retrying) until this process holds the lease, then keeps renewing it.
/// Meanwhile `leader_journal` has the holder's journal API URL, when it advertises one.
pub async fn acquire(
    client: Client,
    config: LeaseConfig,
    leader_journal: watch::Sender<Option<String>>,
) -> Leadership {
    let mut elector = Elector::new(client, config);
    elector.acquire(&leader_journal).await;
    info!(
        lease = %elector.lease_ref(),
        identity = %elector.config.identity,
        "acquired the leader lease"
    );
    let (step_down, stepped_down) = oneshot::channel();
    Leadership {
        renewal: tokio::spawn(elector.keep(stepped_down)),
        step_down: Some(step_down),
    }
}

impl Leadership {
    /// Resolves when the lease is lost; never after a step-down.
    pub async fn lost(&mut self) -> LostLease {
        match (&mut self.renewal).await {
            Ok(Outcome::Lost(reason)) => LostLease(reason),
            Ok(Outcome::Released) => std::future::pending().await,
            Err(e) => LostLease(format!("the lease renewal task failed: {e}")),
        }
    }

    /// Stops renewing and releases the lease.
    pub async fn step_down(mut self) {
        if let Some(step_down) = self.step_down.take() {
            let _ = step_down.send(());
        }
        if let Ok(Outcome::Lost(reason)) = self.renewal.await {
            warn!(%reason, "lost the leader lease while stepping down");
        }
    }
}

/// `hostname-pid`: unique per process on a host, when no pod name is given.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LeaseConfig {
        LeaseConfig {
            name: "lease".into(),
            namespace: "ns".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            journal_url: None,
        }
    }

    fn held_by(holder: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(seconds),
            lease_transitions: Some(3),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_free_or_released_lease_is_taken_at_once() {
        let now = Instant::now();
        assert_eq!(
            decide(&LeaseSpec::default(), "me", now, now),
            Decision::TakeOver
        );
        assert_eq!(decide(&held_by("", 15), "me", now, now), Decision::TakeOver);
    }

    #[test]
    fn our_own_lease_is_renewed() {
        let now = Instant::now();
        assert_eq!(decide(&held_by("me", 15), "me", now, now), Decision::Renew);
    }

    #[test]
    fn another_holder_is_waited_for_until_the_lease_expires_unchanged() {
        let seen = Instant::now();
        let later = seen + Duration::from_secs(5);
        assert_eq!(
            decide(&held_by("other", 15), "me", seen, later),
            Decision::Wait {
                holder: "other".into(),
                for_at_most: Duration::from_secs(10)
            }
        );
        let expired = seen + Duration::from_secs(15);
        assert_eq!(
            decide(&held_by("other", 15), "me", seen, expired),
            Decision::TakeOver
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let now = Timestamp::now();
        let taken = held_spec(&held_by("other", 15), &config(), now);
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));
        let renewed = held_spec(&held_by("me", 15), &config(), now);
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
        assert_eq!(renewed.renew_time, Some(MicroTime(now)));
        assert_eq!(renewed.lease_duration_seconds, Some(15));
    }

    #[test]
    fn the_journal_url_is_advertised_beside_other_annotations_and_read_back() {
        let others = BTreeMap::from([("team".to_owned(), "ops".to_owned())]);
        let set = advertised(Some(others.clone()), Some("http://10.0.0.7:8080"));
        let mut lease = Lease::default();
        lease.metadata.annotations = set.clone();
        assert_eq!(
            journal_url_of(&lease).as_deref(),
            Some("http://10.0.0.7:8080")
        );
        assert_eq!(set.as_ref().map(|a| a["team"].as_str()), Some("ops"));
        // A replica that cannot say where its journal is leaves no stale URL behind.
        lease.metadata.annotations = advertised(set, None);
        assert_eq!(journal_url_of(&lease), None);
        assert_eq!(lease.metadata.annotations, Some(others));
        assert_eq!(advertised(None, None), None);
    }

    #[test]
    fn a_released_lease_has_no_holder() {
        let released = released_spec(&held_by("me", 15), Timestamp::now());
        assert_eq!(holder_of(&released), None);
        assert_eq!(released.lease_transitions, Some(3));
    }

    #[test]
    fn the_timing_must_leave_the_leader_time_to_step_down() {
        assert!(config().validate().is_ok());
        let too_long_deadline = LeaseConfig {
            renew_deadline: Duration::from_secs(15),
            ..config()
        };
        assert!(too_long_deadline.validate().is_err());
        let too_slow_retry = LeaseConfig {
            retry_period: Duration::from_secs(10),
            ..config()
        };
        assert!(too_slow_retry.validate().is_err());
        let nameless = LeaseConfig {
            identity: String::new(),
            ..config()
        };
        assert!(nameless.validate().is_err());
    }
}
