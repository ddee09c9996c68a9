//! Growing the Redis volume in place. A larger `spec.redis.storage` reaches the data the
//! way a person would do it by hand: each Redis claim asks for the new size (when its
//! StorageClass allows volume expansion), and the StatefulSet, whose claim template the
//! API server never lets change, is deleted without its pods (orphaning) and created again
//! with the new template, adopting the running pods. The tenant reconciles (reason
//! `Resizing`) until every claim reports the new capacity. Pure: the observation and the
//! applier call these.

use crate::quantity::Quantity;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;

/// Condition reason while the Redis claims grow.
pub const RESIZING: &str = "Resizing";

/// Stalled reason when a claim's StorageClass cannot grow it.
pub const NOT_EXPANDABLE: &str = "StorageClassNotExpandable";

/// One Redis data claim, as far as its size goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimSize {
    pub name: String,
    /// Its StorageClass (`None` or empty: none).
    pub class: Option<String>,
    /// What its spec asks for.
    pub requested: Option<Quantity>,
    /// What its volume holds (`status.capacity`); known once it is bound.
    pub capacity: Option<Quantity>,
}

impl ClaimSize {
    pub fn of(claim: &PersistentVolumeClaim) -> ClaimSize {
        let storage = |q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
            q.and_then(|q| Quantity::parse(&q.0).ok())
        };
        let spec = claim.spec.as_ref();
        let status = claim.status.as_ref();
        let bound = status.and_then(|s| s.phase.as_deref()) == Some("Bound");
        ClaimSize {
            name: claim.metadata.name.clone().unwrap_or_default(),
            class: spec
                .and_then(|s| s.storage_class_name.clone())
                .filter(|c| !c.is_empty()),
            requested: storage(
                spec.and_then(|s| s.resources.as_ref())
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get("storage")),
            ),
            capacity: storage(
                status
                    .filter(|_| bound)
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage")),
            ),
        }
    }

    /// Whether the claim's spec still asks for less than `wanted`.
    fn asks_less(&self, wanted: &Quantity) -> bool {
        self.requested.as_ref().is_none_or(|r| r < wanted)
    }

    /// Whether its volume is known to hold less than `wanted`.
    fn holds_less(&self, wanted: &Quantity) -> bool {
        self.capacity.as_ref().is_some_and(|c| c < wanted)
    }

    /// Whether the claim neither asks nor holds less than `wanted`: [`storage_state`] then
    /// has nothing to say of it, bound or not.
    pub fn is_settled_at(&self, wanted: &Quantity) -> bool {
        !self.asks_less(wanted) && !self.holds_less(wanted)
    }
}

/// Whether a StorageClass lets its claims grow, as read from the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expansion {
    Allowed,
    /// `allowVolumeExpansion` is not true.
    NotAllowed,
    /// No StorageClass of that name exists.
    NoSuchClass,
}

/// Where the Redis volumes stand against `spec.redis.storage`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum StorageState {
    /// Every claim asks for and holds at least the wanted size (or has no volume yet, and
    /// is provisioned at the size it asks for).
    #[default]
    Settled,
    /// Growing to `to`: `to_ask` still ask for less (the operator asks for more),
    /// `waiting` ask for enough and wait for their volumes to grow.
    Growing {
        to: String,
        to_ask: Vec<String>,
        waiting: Vec<ClaimSize>,
    },
    /// A claim that must grow cannot: its class does not allow expansion.
    Refused { message: String },
}

impl StorageState {
    pub fn is_settled(&self) -> bool {
        *self == StorageState::Settled
    }

    /// Why the tenant is not ready yet, for the status: (reason, message, refused).
    pub fn blocker(&self) -> Option<(&'static str, String, bool)> {
        match self {
            StorageState::Settled => None,
            StorageState::Growing {
                to,
                to_ask,
                waiting,
            } => {
                let mut claims: Vec<String> = to_ask
                    .iter()
                    .map(|name| format!("{name} is asked for {to}"))
                    .collect();
                claims.extend(waiting.iter().map(|c| {
                    let has = c
                        .capacity
                        .as_ref()
                        .map_or_else(|| "no volume yet".into(), |q| q.to_bytes_string());
                    format!("{} has {has}", c.name)
                }));
                Some((
                    RESIZING,
                    format!("The Redis volume grows to {to}: {}", claims.join(", ")),
                    false,
                ))
            }
            StorageState::Refused { message } => Some((NOT_EXPANDABLE, message.clone(), true)),
        }
    }
}

/// The classes `storage_state` will ask about: those of bound claims that ask for less.
pub fn classes_to_read(wanted: &Quantity, claims: &[ClaimSize]) -> Vec<String> {
    let mut classes: Vec<String> = claims
        .iter()
        .filter(|c| c.asks_less(wanted) && c.capacity.is_some())
        .filter_map(|c| c.class.clone())
        .collect();
    classes.sort();
    classes.dedup();
    classes
}

/// Where `claims` stand against `wanted` (`spec.redis.storage`); `expansion` tells what a
/// claim's class allows, asked only of classes whose claims still ask for less.
pub fn storage_state(
    wanted: &Quantity,
    claims: &[ClaimSize],
    mut expansion: impl FnMut(&str) -> Expansion,
) -> StorageState {
    let to = wanted.to_bytes_string();
    let mut to_ask = Vec::new();
    let mut waiting = Vec::new();
    for claim in claims {
        if claim.asks_less(wanted) {
            // The API server lets only bound claims grow; an unbound one is provisioned
            // at what it asks for, and then asked for more.
            if claim.capacity.is_none() {
                waiting.push(claim.clone());
                continue;
            }
            let refusal = match claim.class.as_deref() {
                None => Some("has no StorageClass".to_string()),
                Some(class) => match expansion(class) {
                    Expansion::Allowed => None,
                    Expansion::NotAllowed => Some(format!(
                        "is of StorageClass {class}, which does not allow volume expansion (allowVolumeExpansion is not true)"
                    )),
                    Expansion::NoSuchClass => {
                        Some(format!("is of StorageClass {class}, which does not exist"))
                    }
                },
            };
            if let Some(refusal) = refusal {
                let has = claim
                    .capacity
                    .as_ref()
                    .map(Quantity::to_bytes_string)
                    .unwrap_or_default();
                return StorageState::Refused {
                    message: format!(
                        "spec.redis.storage asks for {to}, but claim {} ({has}) {refusal}: the volume cannot grow. Ask the cluster's administrator to allow expansion on the class, or delete the tenant and create it again with the size it needs",
                        claim.name
                    ),
                };
            }
            to_ask.push(claim.name.clone());
        } else if claim.holds_less(wanted) {
            waiting.push(claim.clone());
        }
    }
    if to_ask.is_empty() && waiting.is_empty() {
        return StorageState::Settled;
    }
    StorageState::Growing {
        to,
        to_ask,
        waiting,
    }
}

/// The size a StatefulSet's Redis claim template asks for.
pub fn template_size(sts: &StatefulSet) -> Option<Quantity> {
    sts.spec
        .as_ref()?
        .volume_claim_templates
        .as_ref()?
        .iter()
        .find_map(|t| {
            let q = t
                .spec
                .as_ref()?
                .resources
                .as_ref()?
                .requests
                .as_ref()?
                .get("storage")?;
            Quantity::parse(&q.0).ok()
        })
}

/// Whether `live` must be replaced for its claim template to ask for what `desired`'s does:
/// the API server refuses any change of a StatefulSet's claim templates.
pub fn template_outgrown(live: &StatefulSet, desired: &StatefulSet) -> bool {
    template_size(live) != template_size(desired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gi(n: i64) -> Quantity {
        Quantity::from_units(n << 30)
    }

    fn claim(name: &str, requested: i64, capacity: Option<i64>) -> ClaimSize {
        ClaimSize {
            name: name.into(),
            class: Some("standard".into()),
            requested: Some(gi(requested)),
            capacity: capacity.map(gi),
        }
    }

    fn expandable(class: &str) -> Expansion {
        match class {
            "standard" => Expansion::Allowed,
            "fixed" => Expansion::NotAllowed,
            _ => Expansion::NoSuchClass,
        }
    }

    #[test]
    fn claims_at_the_wanted_size_are_settled() {
        let claims = [claim("redis-data-t-redis-0", 5, Some(5))];
        assert_eq!(
            storage_state(&gi(5), &claims, expandable),
            StorageState::Settled
        );
        // Larger than wanted (grown by hand) is settled too: nothing ever shrinks.
        let claims = [claim("redis-data-t-redis-0", 8, Some(8))];
        assert!(storage_state(&gi(5), &claims, expandable).is_settled());
        // No claim yet, or one not bound yet at the wanted size: provisioned as asked.
        assert!(storage_state(&gi(5), &[], expandable).is_settled());
        assert!(storage_state(&gi(5), &[claim("c", 5, None)], expandable).is_settled());
    }

    #[test]
    fn a_smaller_claim_of_an_expandable_class_is_asked_for_more() {
        let claims = [claim("redis-data-t-redis-0", 1, Some(1))];
        let state = storage_state(&gi(5), &claims, expandable);
        assert_eq!(
            state,
            StorageState::Growing {
                to: "5Gi".into(),
                to_ask: vec!["redis-data-t-redis-0".into()],
                waiting: vec![],
            }
        );
        let (reason, message, refused) = state.blocker().expect("a blocker");
        assert_eq!((reason, refused), (RESIZING, false));
        assert_eq!(
            message,
            "The Redis volume grows to 5Gi: redis-data-t-redis-0 is asked for 5Gi"
        );
    }

    #[test]
    fn a_claim_that_asks_enough_waits_until_its_volume_reports_the_capacity() {
        let claims = [claim("redis-data-t-redis-0", 5, Some(1))];
        let state = storage_state(&gi(5), &claims, |_| panic!("no class is asked"));
        let (reason, message, _) = state.blocker().expect("a blocker");
        assert_eq!(reason, RESIZING);
        assert!(
            message.ends_with("redis-data-t-redis-0 has 1Gi"),
            "{message}"
        );
        assert!(!state.is_settled());
    }

    #[test]
    fn a_class_without_expansion_refuses_naming_the_class() {
        let mut fixed = claim("redis-data-t-redis-0", 1, Some(1));
        fixed.class = Some("fixed".into());
        let state = storage_state(&gi(5), &[fixed.clone()], expandable);
        let (reason, message, refused) = state.blocker().expect("a blocker");
        assert_eq!((reason, refused), (NOT_EXPANDABLE, true));
        assert!(
            message.contains("StorageClass fixed, which does not allow volume expansion"),
            "{message}"
        );
        assert!(message.contains("asks for 5Gi"), "{message}");

        fixed.class = Some("gone".into());
        let (_, message, _) = storage_state(&gi(5), &[fixed.clone()], expandable)
            .blocker()
            .expect("a blocker");
        assert!(
            message.contains("StorageClass gone, which does not exist"),
            "{message}"
        );

        fixed.class = None;
        let (_, message, _) = storage_state(&gi(5), &[fixed], expandable)
            .blocker()
            .expect("a blocker");
        assert!(message.contains("has no StorageClass"), "{message}");
    }

    #[test]
    fn an_unbound_smaller_claim_waits_for_its_volume_before_it_is_asked() {
        let state = storage_state(&gi(5), &[claim("c", 1, None)], |_| {
            panic!("no class is asked for an unbound claim")
        });
        assert!(matches!(state, StorageState::Growing { ref to_ask, .. } if to_ask.is_empty()));
    }

    #[test]
    fn claims_are_read_from_the_api_objects() {
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "redis-data-t-redis-0"},
            "spec": {"storageClassName": "standard", "resources": {"requests": {"storage": "5Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "1024Mi"}},
        }))
        .expect("a claim");
        assert_eq!(
            ClaimSize::of(&claim),
            ClaimSize {
                name: "redis-data-t-redis-0".into(),
                class: Some("standard".into()),
                requested: Some(gi(5)),
                capacity: Some(gi(1)),
            }
        );
        let pending: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"},
            "spec": {"storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending", "capacity": {"storage": "1Gi"}},
        }))
        .expect("a claim");
        let pending = ClaimSize::of(&pending);
        assert_eq!((pending.class, pending.capacity), (None, None));
    }

    #[test]
    fn a_statefulset_is_replaced_only_when_its_claim_template_size_differs() {
        let sts = |size: &str| -> StatefulSet {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "t-redis"},
                "spec": {
                    "selector": {},
                    "template": {},
                    "serviceName": "t-redis",
                    "volumeClaimTemplates": [{
                        "metadata": {"name": "redis-data"},
                        "spec": {"resources": {"requests": {"storage": size}}},
                    }],
                },
            }))
            .expect("a StatefulSet")
        };
        assert_eq!(template_size(&sts("1Gi")), Some(gi(1)));
        assert!(template_outgrown(&sts("1Gi"), &sts("5Gi")));
        assert!(!template_outgrown(&sts("1Gi"), &sts("1024Mi")));
    }
}
