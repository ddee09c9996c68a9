//! Every name and label value derived from a tenant's name, by the operator and by the
//! built-in controllers that act on its objects, with the rule each must satisfy. The
//! longest tenant name the CRD admits is the longest for which all of them hold.

use super::{redis_config_map_name, redis_name, server_name};
use crate::crd::{DNS_LABEL_MAX, REVISION_HASH_SUFFIX_MAX, namespace_for};

/// What the API server requires of a name or label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// Namespaces: RFC 1123 label, at most 63 characters.
    Dns1123Label,
    /// Services: RFC 1035 label (starts with a letter), at most 63 characters.
    Dns1035Label,
    /// Most object names: RFC 1123 subdomain, at most 253 characters.
    Dns1123Subdomain,
    /// Label values: at most 63 characters, alphanumeric at both ends.
    LabelValue,
}

impl NameRule {
    pub fn allows(self, text: &str) -> bool {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let label_form = |t: &str| {
            t.starts_with(alnum) && t.ends_with(alnum) && t.chars().all(|c| alnum(c) || c == '-')
        };
        match self {
            NameRule::Dns1123Label => text.len() <= DNS_LABEL_MAX && label_form(text),
            NameRule::Dns1035Label => {
                text.len() <= DNS_LABEL_MAX
                    && label_form(text)
                    && text.starts_with(|c: char| c.is_ascii_lowercase())
            }
            NameRule::Dns1123Subdomain => text.len() <= 253 && text.split('.').all(label_form),
            NameRule::LabelValue => {
                text.is_empty()
                    || (text.len() <= DNS_LABEL_MAX
                        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
                        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
                        && text
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            }
        }
    }
}

/// One derived name: what it names, its longest possible value, and its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedName {
    pub what: &'static str,
    pub value: String,
    pub rule: NameRule,
}

/// The longest hash the built-in controllers append (StatefulSet revisions, ReplicaSets):
/// `rand.SafeEncodeString` of a 32-bit FNV hash, at most 10 characters.
const LONGEST_CONTROLLER_HASH: &str = "bcdfghjklm";
/// The random suffix of a generated pod name.
const GENERATED_SUFFIX: &str = "x2v9q";

/// Every name and label value that `tenant` gives rise to, at its longest.
pub fn derived_names(tenant: &str) -> Vec<DerivedName> {
    let redis = redis_name(tenant);
    let server = server_name(tenant);
    let revision = format!("{redis}-{LONGEST_CONTROLLER_HASH}");
    debug_assert_eq!(revision.len(), redis.len() + REVISION_HASH_SUFFIX_MAX);
    let replica_set = format!("{server}-{LONGEST_CONTROLLER_HASH}");
    let name = |what, value: String, rule| DerivedName { what, value, rule };
    vec![
        name("namespace", namespace_for(tenant), NameRule::Dns1123Label),
        name("Redis Service", redis.clone(), NameRule::Dns1035Label),
        name("server Service", server.clone(), NameRule::Dns1035Label),
        name(
            "Redis StatefulSet",
            redis.clone(),
            NameRule::Dns1123Subdomain,
        ),
        name(
            "server Deployment",
            server.clone(),
            NameRule::Dns1123Subdomain,
        ),
        name(
            "Redis ConfigMap",
            redis_config_map_name(tenant),
            NameRule::Dns1123Subdomain,
        ),
        name("tenant label", tenant.to_string(), NameRule::LabelValue),
        // Made by the StatefulSet controller.
        name(
            "Redis ControllerRevision",
            revision.clone(),
            NameRule::Dns1123Subdomain,
        ),
        name(
            "Redis pod label controller-revision-hash",
            revision,
            NameRule::LabelValue,
        ),
        name("Redis pod", format!("{redis}-0"), NameRule::Dns1123Label),
        name(
            "Redis pod label statefulset.kubernetes.io/pod-name",
            format!("{redis}-0"),
            NameRule::LabelValue,
        ),
        name(
            "Redis claim",
            format!("{}-{redis}-0", super::redis::DATA_VOLUME),
            NameRule::Dns1123Subdomain,
        ),
        // Made by the Deployment and ReplicaSet controllers.
        name(
            "server ReplicaSet",
            replica_set.clone(),
            NameRule::Dns1123Subdomain,
        ),
        name(
            "server pod label pod-template-hash",
            LONGEST_CONTROLLER_HASH.to_string(),
            NameRule::LabelValue,
        ),
        name(
            "server pod",
            format!("{replica_set}-{GENERATED_SUFFIX}"),
            NameRule::Dns1123Subdomain,
        ),
    ]
}

/// The derived names that `tenant` would make invalid.
pub fn invalid_derived_names(tenant: &str) -> Vec<DerivedName> {
    derived_names(tenant)
        .into_iter()
        .filter(|n| !n.rule.allows(&n.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MAX_TENANT_NAME_LEN, TENANT_NAME_PATTERN};
    use crate::validation::validate;
    use proptest::prelude::*;

    #[test]
    fn the_longest_admitted_name_is_the_longest_whose_derived_names_all_hold() {
        let longest = "a".repeat(MAX_TENANT_NAME_LEN);
        assert_eq!(invalid_derived_names(&longest), vec![]);
        let one_more = "a".repeat(MAX_TENANT_NAME_LEN + 1);
        let broken: Vec<_> = invalid_derived_names(&one_more)
            .into_iter()
            .map(|n| n.what)
            .collect();
        assert_eq!(
            broken,
            vec!["Redis pod label controller-revision-hash"],
            "the revision label is the binding limit"
        );
    }

    #[test]
    fn a_leading_digit_breaks_the_service_names() {
        let broken: Vec<_> = invalid_derived_names("7eleven")
            .into_iter()
            .map(|n| n.what)
            .collect();
        assert_eq!(broken, vec!["Redis Service", "server Service"]);
        assert!(TENANT_NAME_PATTERN.starts_with("^[a-z]("));
    }

    proptest! {
        /// Whatever name validation accepts, every derived name holds; whatever it refuses
        /// breaks a derived name or the namespace's own form.
        #[test]
        fn validation_accepts_exactly_the_realisable_names(
            name in "[a-z0-9-]{1,70}",
        ) {
            let accepted = validate(&name, &crate::crd::TenantSpec::default()).is_empty();
            let realisable = invalid_derived_names(&name).is_empty();
            prop_assert_eq!(accepted, realisable, "{}", name);
        }

        #[test]
        fn every_admitted_length_is_realisable(length in 1..=MAX_TENANT_NAME_LEN, seed in any::<u64>()) {
            let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789-";
            let name: String = (0..length)
                .map(|i| {
                    let pick = (seed.rotate_left(i as u32 * 7) as usize + i * 13) % alphabet.len();
                    let c = alphabet[pick] as char;
                    if i == 0 || i + 1 == length { if c.is_ascii_lowercase() { c } else { 'q' } } else { c }
                })
                .collect();
            prop_assert_eq!(invalid_derived_names(&name), vec![], "{}", name);
        }
    }
}
