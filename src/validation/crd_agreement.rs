//! The CRD and [`super::validate`] agree: both are built from the constants of
//! [`crate::crd`], and these tests check what sharing constants cannot: that validation
//! checks every limit the generated schema declares (walking the schema, so a limit added
//! to the CRD without a check fails here), and that each pattern of the schema and its CEL
//! rules accepts exactly what validation's hand-written predicate accepts.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Problems, check_tenant_name, syntax, validate};
use crate::crd::{
    BACKUP_SCHEDULE_PATTERN, DNS_LABEL_PATTERN, ENV_NAME_PATTERN, REDIS_CONFIG_KEY_PATTERN,
    RESERVED_REDIS_KEYS, TENANT_NAME_PATTERN, TenantSpec, crd,
};
use crate::redis_config::SUPPORTED_DIRECTIVES;

/// Schema limits that only admission enforces, each with the reason validation leaves it.
const ADMISSION_ONLY: [(&str, &str, &str); 8] = [
    (
        ".spec.redis.backup.storage",
        "maxLength",
        "a quantity's text length means nothing once it parses",
    ),
    (
        ".spec.redis.config{}",
        "maxLength",
        "each directive's value is checked for its own form, far shorter",
    ),
    (
        ".spec.redis.storage",
        "maxLength",
        "a quantity's text length means nothing once it parses",
    ),
    (
        ".spec.server.tolerations[].key",
        "maxLength",
        "a taint key's own form is checked, tighter: a name part of at most 63",
    ),
    (
        ".spec.redis.tolerations[].key",
        "maxLength",
        "a taint key's own form is checked, tighter: a name part of at most 63",
    ),
    (
        ".spec.server.topologySpread[].topologyKey",
        "maxLength",
        "a node label key's own form is checked, tighter: a name part of at most 63",
    ),
    (
        ".spec.redis.topologySpread[].topologyKey",
        "maxLength",
        "a node label key's own form is checked, tighter: a name part of at most 63",
    ),
    (
        ".status.journal.sequence",
        "minimum",
        "status is written by the operator, not validated",
    ),
];

const LIMIT_KEYWORDS: [&str; 7] = [
    "maxLength",
    "minLength",
    "maxItems",
    "maxProperties",
    "maximum",
    "minimum",
    "minItems",
];

/// One limit of the schema: where (`.spec.server.env[].name`; `[]` is an item, `{}` a
/// map value, `|1` the second `anyOf` branch), which keyword, and the bound.
#[derive(Debug)]
struct Limit {
    path: String,
    keyword: String,
    bound: i64,
}

fn openapi_schema() -> Value {
    let crd = serde_json::to_value(crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn collect(node: &Value, path: &str, limits: &mut Vec<Limit>, patterns: &mut Vec<String>) {
    let Some(node) = node.as_object() else {
        return;
    };
    for keyword in LIMIT_KEYWORDS {
        if let Some(bound) = node.get(keyword).and_then(Value::as_f64) {
            limits.push(Limit {
                path: path.to_owned(),
                keyword: keyword.to_owned(),
                bound: bound as i64,
            });
        }
    }
    if let Some(pattern) = node.get("pattern").and_then(Value::as_str) {
        patterns.push(pattern.to_owned());
    }
    let matches_call = regex::Regex::new(r"matches\('([^']*)'\)").unwrap();
    for rule in node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rule = rule["rule"].as_str().unwrap_or_default();
        for (_, [pattern]) in matches_call.captures_iter(rule).map(|c| c.extract()) {
            patterns.push(pattern.to_owned());
        }
    }
    for (name, child) in node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        collect(child, &format!("{path}.{name}"), limits, patterns);
    }
    if let Some(items) = node.get("items") {
        collect(items, &format!("{path}[]"), limits, patterns);
    }
    if let Some(values) = node.get("additionalProperties") {
        collect(values, &format!("{path}{{}}"), limits, patterns);
    }
    for (i, branch) in node
        .get("anyOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        collect(branch, &format!("{path}|{i}"), limits, patterns);
    }
}

fn schema_limits_and_patterns() -> (Vec<Limit>, Vec<String>) {
    let (mut limits, mut patterns) = (Vec::new(), Vec::new());
    collect(&openapi_schema(), "", &mut limits, &mut patterns);
    (limits, patterns)
}

/// A spec valid in every part a limit's path goes through; the `configMapKeyRef` variant
/// when the path needs one.
fn base_spec(path: &str) -> Value {
    let key_ref = json!({"name": "settings", "key": "level"});
    let value_from = if path.contains("configMapKeyRef") {
        json!({"configMapKeyRef": key_ref})
    } else {
        json!({"secretKeyRef": key_ref})
    };
    let rule = json!({"description": "web", "from": {"app": "web"}, "to": {"app": "web"}, "ports": [{"port": 80}]});
    let toleration = json!({"key": "dedicated", "operator": "Equal", "value": "nl", "effect": "NoExecute", "tolerationSeconds": 30});
    let spread = json!({"topologyKey": "kubernetes.io/hostname", "maxSkew": 1});
    json!({
        "displayName": "Acme",
        "description": "Acme's logs",
        "imagePullSecrets": ["registry"],
        "server": {
            "image": "server:1",
            "env": [{"name": "LEVEL", "valueFrom": value_from}],
            "autoscaling": {"minReplicas": 1, "maxReplicas": 1, "targetCPUUtilizationPercentage": 80},
            "nodeSelector": {"pool": "web"},
            "tolerations": [toleration.clone()],
            "topologySpread": [spread.clone()],
        },
        "redis": {
            "image": "redis:7",
            "storage": "1Gi",
            "config": {"maxmemory-policy": "allkeys-lru"},
            "storageClassName": "standard",
            "nodeSelector": {"disk": "ssd"},
            "tolerations": [toleration],
            "topologySpread": [spread],
            "backup": {"schedule": "0 3 * * *", "keep": 7, "storage": "8Gi"},
        },
        "networkPolicy": {
            "allowedNamespaces": ["monitoring"],
            "ingressRules": [rule.clone()],
            "egressRules": [rule],
        },
        "auth": {"adminUserId": "admin"},
    })
}

/// The value at `path` (its `{}` is the map's first value) in `spec`, made by `make` from
/// what is there.
fn replace_at(spec: &mut Value, path: &str, make: impl FnOnce(&Value) -> Value) {
    let mut node = spec;
    let steps = path.trim_start_matches(".spec.").split('.');
    for step in steps {
        let (name, suffix) = match step.find(['[', '{']) {
            Some(at) => step.split_at(at),
            None => (step, ""),
        };
        node = &mut node[name];
        for marker in suffix.split_inclusive([']', '}']) {
            node = match marker {
                "[]" => &mut node[0],
                "{}" => node.as_object_mut().unwrap().values_mut().next().unwrap(),
                other => panic!("unexpected path step {other} in {path}"),
            };
        }
    }
    *node = make(node);
}

/// A value just past `limit` (or exactly at it), of the form of what the base spec holds.
fn at_bound(limit: &Limit, current: &Value, past: bool) -> Value {
    let step = i64::from(past);
    let bound = match limit.keyword.as_str() {
        "minimum" | "minLength" | "minItems" => limit.bound - step,
        _ => limit.bound + step,
    };
    // Only sizes are counts; a number's bound may be past zero (minimum 0, minus one).
    let count = || usize::try_from(bound).unwrap();
    match limit.keyword.as_str() {
        "maxLength" | "minLength" => Value::from("a".repeat(count())),
        "maxItems" | "minItems" => {
            Value::from(vec![current.as_array().unwrap()[0].clone(); count()])
        }
        "maxProperties" => {
            let first = current
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap()
                .clone();
            Value::Object(
                (0..count())
                    .map(|i| (format!("k{i}"), first.clone()))
                    .collect(),
            )
        }
        _ => Value::from(bound),
    }
}

/// `.spec.server.env[].name` as validation names it: `spec.server.env[0].name`; a map
/// value's problems are the map's.
fn problem_field(path: &str) -> String {
    path.trim_start_matches('.')
        .replace("[]", "[0]")
        .replace("{}", "")
}

fn limit_problems(limit: &Limit, past: bool) -> Vec<String> {
    let mut spec = base_spec(&limit.path);
    replace_at(&mut spec, &limit.path, |current| {
        at_bound(limit, current, past)
    });
    let spec: TenantSpec = serde_json::from_value(spec).unwrap();
    let field = problem_field(&limit.path);
    validate("acme", &spec)
        .into_iter()
        .filter(|problem| problem.field.starts_with(&field))
        .map(|problem| problem.to_string())
        .collect()
}

#[test]
fn the_base_spec_is_valid() {
    for path in ["", "configMapKeyRef"] {
        let spec: TenantSpec = serde_json::from_value(base_spec(path)).unwrap();
        assert_eq!(validate("acme", &spec), []);
    }
}

#[test]
fn validation_checks_every_limit_of_the_schema_with_the_same_bound() {
    let (limits, _) = schema_limits_and_patterns();
    for exempt in ADMISSION_ONLY {
        assert!(
            limits
                .iter()
                .any(|l| (l.path.as_str(), l.keyword.as_str()) == (exempt.0, exempt.1)),
            "{exempt:?} is no longer in the schema: drop it from ADMISSION_ONLY"
        );
    }
    let checked = limits.iter().filter(|limit| {
        // `|1`: a quantity's string form; validation parses the quantity instead.
        !limit.path.contains('|')
            && !ADMISSION_ONLY
                .iter()
                .any(|(path, keyword, _)| (*path, *keyword) == (&*limit.path, &*limit.keyword))
    });
    let mut count = 0;
    for limit in checked {
        count += 1;
        let past = limit_problems(limit, true);
        assert!(
            !past.is_empty(),
            "the schema has {limit:?} but validation accepts a value past it"
        );
        if limit.keyword.starts_with("max") {
            assert!(
                past.iter().any(|p| p.contains(&limit.bound.to_string())),
                "the schema has {limit:?} but validation says {past:?}"
            );
        }
        let at = limit_problems(limit, false);
        assert!(
            !at.iter()
                .any(|p| p.contains("at most") || p.contains("from 1 to")),
            "the schema allows {limit:?} but validation refuses it: {at:?}"
        );
    }
    assert!(
        count >= 30,
        "only {count} limits walked: is the schema walk broken?"
    );
}

#[test]
fn every_pattern_of_the_crd_is_a_named_one() {
    let (_, patterns) = schema_limits_and_patterns();
    let named = [
        TENANT_NAME_PATTERN,
        DNS_LABEL_PATTERN,
        ENV_NAME_PATTERN,
        REDIS_CONFIG_KEY_PATTERN,
        BACKUP_SCHEDULE_PATTERN,
    ];
    let found: BTreeMap<&str, usize> = patterns.iter().fold(BTreeMap::new(), |mut found, p| {
        *found.entry(p.as_str()).or_default() += 1;
        found
    });
    for pattern in found.keys() {
        assert!(
            named.contains(pattern),
            "{pattern} has no constant in crate::crd"
        );
    }
    for pattern in named {
        assert!(found.contains_key(pattern), "{pattern} is not in the CRD");
    }
}

#[test]
fn every_key_validation_accepts_or_reserves_has_the_crds_key_form() {
    let form = regex::Regex::new(REDIS_CONFIG_KEY_PATTERN).unwrap();
    let supported = SUPPORTED_DIRECTIVES.iter().map(|d| d.name);
    for key in supported.chain(RESERVED_REDIS_KEYS) {
        assert!(form.is_match(key), "{key}");
    }
}

fn tenant_name_form_ok(name: &str) -> bool {
    let mut problems = Problems::default();
    check_tenant_name(name, &mut problems);
    !problems
        .0
        .iter()
        .any(|p| p.message.contains("must start with"))
}

/// Strings over the characters that matter to these patterns, and a few that never do.
fn texts() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[-a-zA-Z0-9._/ é\n]{0,70}").unwrap()
}

proptest! {
    #[test]
    fn the_crds_patterns_accept_what_validation_accepts(text in texts()) {
        let matches = |pattern: &str| regex::Regex::new(pattern).unwrap().is_match(&text);
        prop_assert_eq!(matches(TENANT_NAME_PATTERN), tenant_name_form_ok(&text));
        // The schema adds maxLength to the namespace pattern; `is_dns_label` has both.
        let short = text.len() <= crate::crd::limits::MAX_DNS_LABEL;
        prop_assert_eq!(matches(DNS_LABEL_PATTERN) && short, syntax::is_dns_label(&text));
        prop_assert_eq!(matches(ENV_NAME_PATTERN), syntax::is_env_var_name(&text));
    }
}
