//! Checks of a Tenant spec that the operator makes before acting on it.
//!
//! The API server already enforces the CRD's schema and CEL rules, but the CRD installed
//! may be older than the operator, so everything is checked again here, together with
//! what CEL cannot express (Redis directives, label syntax, duplicate names, maxmemory
//! against the memory limit). Problems are reported on the Tenant's status; nothing here
//! panics, whatever the input.

use crate::crd::{
    Autoscaling, EgressRule, EnvVar, EnvVarSource, IngressRule, KeyRef, MAX_TENANT_NAME_LEN,
    NAME_FORM_MESSAGE, NetworkPolicySpec, OPERATOR_ENV, PortRule, QuantityValue, RedisSpec,
    RequestLimit, Resources, ServerSpec, TenantSpec, limits, name_length_message,
};
use crate::quantity::Quantity;
use crate::redis_config::{self, quoted};
use std::collections::BTreeMap;
use std::fmt;

/// One problem with a spec: the field at fault (`spec.server.resources.cpu`) and what is
/// wrong with it. Displayed as `field: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    pub field: String,
    pub message: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Problems listed in a status message; the rest are counted.
const MAX_SUMMARIZED: usize = 10;

/// Every problem with `spec` for a tenant called `tenant_name`, in a stable order: the
/// same input always gives the same list.
pub fn validate(tenant_name: &str, spec: &TenantSpec) -> Vec<SpecProblem> {
    let mut problems = Problems::default();
    check_tenant_name(tenant_name, &mut problems);
    check_descriptions(spec, &mut problems);
    check_server(&spec.server, &mut problems);
    check_redis(&spec.redis, &mut problems);
    network::check(&spec.network_policy, &mut problems);
    if let Some(auth) = &spec.auth {
        check_admin_user_id(auth.admin_user_id.as_deref(), &mut problems);
    }
    placement::check_image_pull_secrets(&spec.image_pull_secrets, &mut problems);
    problems.0
}

/// The problems as one status message: `field: message; field: message`, the first few
/// listed and the rest counted.
pub fn summarize(problems: &[SpecProblem]) -> String {
    let mut summary = problems
        .iter()
        .take(MAX_SUMMARIZED)
        .map(SpecProblem::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let unlisted = problems.len().saturating_sub(MAX_SUMMARIZED);
    if unlisted > 0 {
        summary.push_str(&format!("; and {unlisted} more"));
    }
    summary
}

#[derive(Default)]
struct Problems(Vec<SpecProblem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecProblem {
            field: field.into(),
            message: message.into(),
        });
    }

    fn check_count(&mut self, field: &str, count: usize, max: usize, what: &str) {
        if count > max {
            self.add(
                field,
                format!("at most {max} {what} are allowed, found {count}"),
            );
        }
    }

    fn check_length(&mut self, field: &str, text: &str, max: usize) {
        let length = text.chars().count();
        if length > max {
            self.add(field, format!("at most {max} characters, found {length}"));
        }
    }
}

fn check_tenant_name(name: &str, problems: &mut Problems) {
    const FIELD: &str = "metadata.name";
    let length = name.chars().count();
    if length > MAX_TENANT_NAME_LEN {
        let why = name_length_message();
        let why = why.trim_start_matches("metadata.name: ");
        problems.add(FIELD, format!("{why}; {} has {length}", quoted(name)));
    }
    if !syntax::has_dns_label_form(name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        problems.add(
            FIELD,
            format!(
                "{} {}",
                quoted(name),
                NAME_FORM_MESSAGE
                    .trim_start_matches("metadata.name: a tenant name")
                    .trim_start()
            ),
        );
    }
}

fn check_descriptions(spec: &TenantSpec, problems: &mut Problems) {
    if let Some(display_name) = &spec.display_name {
        problems.check_length("spec.displayName", display_name, limits::MAX_DISPLAY_NAME);
    }
    if let Some(description) = &spec.description {
        problems.check_length("spec.description", description, limits::MAX_DESCRIPTION);
    }
}

fn check_server(server: &ServerSpec, problems: &mut Problems) {
    if !(1..=limits::MAX_SERVER_REPLICAS).contains(&server.replicas) {
        problems.add(
            "spec.server.replicas",
            format!(
                "must be from 1 to {}, found {}",
                limits::MAX_SERVER_REPLICAS,
                server.replicas
            ),
        );
    }
    check_image("spec.server.image", &server.image, problems);
    check_resources("spec.server.resources", server.resources.as_ref(), problems);
    env::check(&server.env, problems);
    placement::check("spec.server", server.placement(), problems);
    if let Some(autoscaling) = &server.autoscaling {
        check_autoscaling(autoscaling, problems);
    }
}

fn check_autoscaling(autoscaling: &Autoscaling, problems: &mut Problems) {
    const FIELD: &str = "spec.server.autoscaling";
    let replicas = 1..=limits::MAX_SERVER_REPLICAS;
    for (field, count) in [
        ("minReplicas", autoscaling.min_replicas),
        ("maxReplicas", autoscaling.max_replicas),
    ] {
        if !replicas.contains(&count) {
            problems.add(
                format!("{FIELD}.{field}"),
                format!(
                    "must be from 1 to {}, found {count}",
                    limits::MAX_SERVER_REPLICAS
                ),
            );
        }
    }
    if autoscaling.min_replicas > autoscaling.max_replicas {
        problems.add(
            FIELD,
            format!(
                "minReplicas ({}) must not exceed maxReplicas ({})",
                autoscaling.min_replicas, autoscaling.max_replicas
            ),
        );
    }
    let target = autoscaling.target_cpu_utilization_percentage;
    if !(1..=limits::MAX_CPU_TARGET_PERCENT).contains(&target) {
        problems.add(
            format!("{FIELD}.targetCPUUtilizationPercentage"),
            format!(
                "must be from 1 to {}, found {target}",
                limits::MAX_CPU_TARGET_PERCENT
            ),
        );
    }
}

fn check_redis(redis: &RedisSpec, problems: &mut Problems) {
    if redis.replicas != 1 {
        problems.add(
            "spec.redis.replicas",
            format!(
                "only 1 is supported, found {}: more replicas without replication would be independent masters with different data",
                redis.replicas
            ),
        );
    }
    check_image("spec.redis.image", &redis.image, problems);
    check_resources("spec.redis.resources", redis.resources.as_ref(), problems);
    check_positive_quantity("spec.redis.storage", &redis.storage, Unit::Bytes, problems);
    check_redis_config(redis, problems);
    placement::check_storage_class(redis.storage_class_name.as_deref(), problems);
    placement::check("spec.redis", redis.placement(), problems);
    if let Some(backup) = &redis.backup {
        backup::check(backup, problems);
    }
}

fn check_image(field: &str, image: &str, problems: &mut Problems) {
    if image.is_empty() {
        problems.add(
            field,
            "an image is required, such as neurallog/server:latest or redis:7-alpine",
        );
    } else if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        problems.add(
            field,
            format!(
                "{} contains whitespace or control characters; an image reference has none",
                quoted(image)
            ),
        );
    }
    problems.check_length(field, image, limits::MAX_IMAGE);
}

/// What a quantity measures, for the checks that differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Cores,
    Bytes,
}

fn check_resources(field: &str, resources: Option<&Resources>, problems: &mut Problems) {
    let Some(resources) = resources else {
        return;
    };
    if let Some(cpu) = &resources.cpu {
        check_request_limit(&format!("{field}.cpu"), cpu, Unit::Cores, problems);
    }
    if let Some(memory) = &resources.memory {
        check_request_limit(&format!("{field}.memory"), memory, Unit::Bytes, problems);
    }
}

fn check_request_limit(field: &str, pair: &RequestLimit, unit: Unit, problems: &mut Problems) {
    let mut check = |which: &str, value: &Option<QuantityValue>| {
        let value = value.as_ref()?;
        check_positive_quantity(&format!("{field}.{which}"), value.as_str(), unit, problems)
    };
    let request = check("request", &pair.request);
    let limit = check("limit", &pair.limit);
    if let (Some(request), Some(limit)) = (request, limit)
        && request > limit
    {
        problems.add(
            field,
            format!(
                "the request ({}) must not exceed the limit ({})",
                display_quantity(&request, unit),
                display_quantity(&limit, unit)
            ),
        );
    }
}

/// Parses a quantity that must be above zero (and whole bytes for memory); reports why
/// not. Returns the value when it can still be compared with others.
fn check_positive_quantity(
    field: &str,
    text: &str,
    unit: Unit,
    problems: &mut Problems,
) -> Option<Quantity> {
    let quantity = match Quantity::parse(text) {
        Ok(quantity) => quantity,
        Err(error) => {
            problems.add(field, error.to_string());
            return None;
        }
    };
    if !quantity.is_positive() {
        problems.add(field, format!("{} must be greater than zero", quoted(text)));
        return None;
    }
    if unit == Unit::Bytes && !quantity.is_whole() {
        let milli_hint = if text.ends_with('m') {
            " (the suffix m means milli, not mega)"
        } else {
            ""
        };
        problems.add(
            field,
            format!(
                "{} is a fraction of a byte{milli_hint}; use a whole number of bytes such as 256Mi or 1Gi",
                quoted(text)
            ),
        );
    }
    Some(quantity)
}

fn display_quantity(quantity: &Quantity, unit: Unit) -> String {
    match unit {
        Unit::Cores => quantity.to_cpu_string(),
        Unit::Bytes => quantity.to_bytes_string(),
    }
}

fn check_redis_config(redis: &RedisSpec, problems: &mut Problems) {
    problems.check_count(
        "spec.redis.config",
        redis.config.len(),
        limits::MAX_REDIS_CONFIG,
        "settings",
    );
    for (key, value) in &redis.config {
        if let Err(error) = redis_config::validate_entry(key, value) {
            problems.add(error.field(), error.problem.to_string());
        }
    }
    check_maxmemory_fits_limit(redis, problems);
}

/// A maxmemory above the container's memory limit gets Redis OOM-killed before it
/// evicts anything. Only an explicit limit is compared: defaults belong to rendering.
fn check_maxmemory_fits_limit(redis: &RedisSpec, problems: &mut Problems) {
    let Some(maxmemory) = redis.config.get("maxmemory") else {
        return;
    };
    let Some(limit_text) = redis
        .resources
        .as_ref()
        .and_then(|r| r.memory.as_ref())
        .and_then(|m| m.limit.as_ref())
    else {
        return;
    };
    let (Some(maxmemory_bytes), Ok(limit)) = (
        redis_config::memory_size_bytes(maxmemory),
        Quantity::parse(limit_text.as_str()),
    ) else {
        return;
    };
    let maxmemory_milli = i128::from(maxmemory_bytes).saturating_mul(1000);
    if maxmemory_milli > limit.milli() {
        problems.add(
            "spec.redis.config.maxmemory",
            format!(
                "{} is more than the Redis memory limit ({}); Redis would be OOM-killed before it evicts keys: keep maxmemory well below the limit to leave room for Redis's own overhead",
                quoted(maxmemory),
                limit.to_bytes_string()
            ),
        );
    }
}

mod network {
    //! `spec.networkPolicy`: namespace names and the custom rules.

    use super::{
        BTreeMap, EgressRule, IngressRule, NetworkPolicySpec, PortRule, Problems, limits, quoted,
        syntax,
    };

    const FIELD: &str = "spec.networkPolicy";

    pub(super) fn check(policy: &NetworkPolicySpec, problems: &mut Problems) {
        check_allowed_namespaces(&policy.allowed_namespaces, problems);
        let ingress = &policy.ingress_rules;
        let egress = &policy.egress_rules;
        problems.check_count(
            &format!("{FIELD}.ingressRules"),
            ingress.len(),
            limits::MAX_RULES,
            "rules",
        );
        problems.check_count(
            &format!("{FIELD}.egressRules"),
            egress.len(),
            limits::MAX_RULES,
            "rules",
        );
        let ingress = ingress
            .iter()
            .enumerate()
            .map(|(i, rule)| Rule::ingress(i, rule));
        let egress = egress
            .iter()
            .enumerate()
            .map(|(i, rule)| Rule::egress(i, rule));
        for rule in ingress.chain(egress) {
            rule.check(problems);
        }
    }

    fn check_allowed_namespaces(namespaces: &[String], problems: &mut Problems) {
        let field = format!("{FIELD}.allowedNamespaces");
        problems.check_count(
            &field,
            namespaces.len(),
            limits::MAX_ALLOWED_NAMESPACES,
            "namespaces",
        );
        for (i, namespace) in namespaces.iter().enumerate() {
            if !syntax::is_dns_label(namespace) {
                problems.add(
                    format!("{field}[{i}]"),
                    format!(
                        "{} is not a namespace name: lower-case letters, digits and '-', at most 63, starting and ending with a letter or digit",
                        quoted(namespace)
                    ),
                );
            }
        }
    }

    /// What ingress and egress rules share, seen the same way.
    struct Rule<'a> {
        field: String,
        description: Option<&'a str>,
        /// `from` or `to`.
        selector_name: &'static str,
        selector: &'a BTreeMap<String, String>,
        /// Whom an empty selector would let in or out.
        everyone: &'static str,
        ports: &'a [PortRule],
    }

    impl<'a> Rule<'a> {
        fn ingress(index: usize, rule: &'a IngressRule) -> Self {
            Rule {
                field: format!("{FIELD}.ingressRules[{index}]"),
                description: rule.description.as_deref(),
                selector_name: "from",
                selector: &rule.from,
                everyone: "from every pod in every namespace",
                ports: &rule.ports,
            }
        }

        fn egress(index: usize, rule: &'a EgressRule) -> Self {
            Rule {
                field: format!("{FIELD}.egressRules[{index}]"),
                description: rule.description.as_deref(),
                selector_name: "to",
                selector: &rule.to,
                everyone: "to every pod in every namespace",
                ports: &rule.ports,
            }
        }

        fn check(&self, problems: &mut Problems) {
            if let Some(description) = self.description {
                let field = format!("{}.description", self.field);
                problems.check_length(&field, description, limits::MAX_RULE_DESCRIPTION);
            }
            self.check_selector(problems);
            self.check_ports(problems);
        }

        fn check_selector(&self, problems: &mut Problems) {
            let field = format!("{}.{}", self.field, self.selector_name);
            if self.selector.is_empty() {
                problems.add(
                    &field,
                    format!(
                        "must list at least one label: an empty selector matches every pod, so the rule would allow traffic {}",
                        self.everyone
                    ),
                );
            }
            problems.check_count(
                &field,
                self.selector.len(),
                limits::MAX_RULE_LABELS,
                "labels",
            );
            for (key, value) in self.selector {
                if let Err(why) = syntax::check_label_key(key) {
                    problems.add(
                        &field,
                        format!("label key {} is not valid: {why}", quoted(key)),
                    );
                }
                if let Err(why) = syntax::check_label_value(value) {
                    problems.add(
                        &field,
                        format!(
                            "the value {} of label {} is not valid: {why}",
                            quoted(value),
                            quoted(key)
                        ),
                    );
                }
            }
        }

        fn check_ports(&self, problems: &mut Problems) {
            let field = format!("{}.ports", self.field);
            problems.check_count(&field, self.ports.len(), limits::MAX_RULE_PORTS, "ports");
            for (i, port) in self.ports.iter().enumerate() {
                if !(1..=limits::MAX_PORT).contains(&port.port) {
                    problems.add(
                        format!("{field}[{i}].port"),
                        format!(
                            "must be from 1 to {}, found {}",
                            limits::MAX_PORT,
                            port.port
                        ),
                    );
                }
            }
        }
    }
}

fn check_admin_user_id(admin_user_id: Option<&str>, problems: &mut Problems) {
    const FIELD: &str = "spec.auth.adminUserId";
    match admin_user_id {
        Some("") => problems.add(
            FIELD,
            "must not be empty; leave it out to use the operator's default admin user",
        ),
        Some(id) => problems.check_length(FIELD, id, limits::MAX_ADMIN_USER_ID),
        None => {}
    }
}

mod env {
    //! `spec.server.env`: names, uniqueness and where each value comes from.

    use super::{EnvVar, EnvVarSource, KeyRef, OPERATOR_ENV, Problems, limits, quoted, syntax};
    use std::collections::BTreeMap;

    const FIELD: &str = "spec.server.env";

    pub(super) fn check(env: &[EnvVar], problems: &mut Problems) {
        problems.check_count(FIELD, env.len(), limits::MAX_ENV, "variables");
        let mut first_index: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, var) in env.iter().enumerate() {
            let field = format!("{FIELD}[{i}]");
            check_name(&format!("{field}.name"), &var.name, problems);
            match first_index.get(var.name.as_str()) {
                Some(first) => problems.add(
                    format!("{field}.name"),
                    format!(
                        "{} is already set by {FIELD}[{first}]; names must be unique",
                        quoted(&var.name)
                    ),
                ),
                None => {
                    first_index.insert(&var.name, i);
                }
            }
            check_value(&field, var, problems);
        }
    }

    fn check_name(field: &str, name: &str, problems: &mut Problems) {
        if OPERATOR_ENV.contains(&name) {
            problems.add(
                field,
                format!(
                    "{name} is set by the operator and cannot be overridden ({} are reserved)",
                    OPERATOR_ENV.join(", ")
                ),
            );
        } else if !syntax::is_env_var_name(name) {
            problems.add(
                field,
                format!(
                    "{} is not a valid variable name: use letters, digits, '_', '-' and '.', not starting with a digit",
                    quoted(name)
                ),
            );
        }
        problems.check_length(field, name, limits::MAX_ENV_NAME);
    }

    fn check_value(field: &str, var: &EnvVar, problems: &mut Problems) {
        match (&var.value, &var.value_from) {
            (Some(_), Some(_)) => problems.add(field, "set either value or valueFrom, not both"),
            (None, None) => problems.add(
                field,
                "set value (\"\" for an empty string) or valueFrom (a secretKeyRef or configMapKeyRef)",
            ),
            (None, Some(source)) => check_source(&format!("{field}.valueFrom"), source, problems),
            (Some(_), None) => {}
        }
    }

    fn check_source(field: &str, source: &EnvVarSource, problems: &mut Problems) {
        match (&source.secret_key_ref, &source.config_map_key_ref) {
            (Some(secret), None) => {
                check_key_ref(&format!("{field}.secretKeyRef"), secret, "Secret", problems)
            }
            (None, Some(config_map)) => check_key_ref(
                &format!("{field}.configMapKeyRef"),
                config_map,
                "ConfigMap",
                problems,
            ),
            _ => problems.add(field, "set exactly one of secretKeyRef and configMapKeyRef"),
        }
    }

    fn check_key_ref(field: &str, key_ref: &KeyRef, kind: &str, problems: &mut Problems) {
        if !syntax::is_dns_subdomain(&key_ref.name) {
            problems.add(
                format!("{field}.name"),
                format!(
                    "{} is not a {kind} name: lower-case letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit",
                    quoted(&key_ref.name)
                ),
            );
        }
        if let Err(why) = syntax::check_config_key(&key_ref.key) {
            problems.add(
                format!("{field}.key"),
                format!("{} is not a valid {kind} key: {why}", quoted(&key_ref.key)),
            );
        }
    }
}

/// Whether `text` is a DNS-1123 label: the form of a namespace name.
pub fn is_dns_label(text: &str) -> bool {
    syntax::is_dns_label(text)
}

/// A label selector of `key=value` pairs separated by commas (empty: select everything),
/// as the operator's pod-selector flags take it; the error says which pair is wrong.
pub fn parse_match_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not key=value"));
        };
        let (key, value) = (key.trim(), value.trim());
        syntax::check_label_key(key).map_err(|why| format!("label key {key:?}: {why}"))?;
        syntax::check_label_value(value).map_err(|why| format!("label value {value:?}: {why}"))?;
        labels.insert(key.to_string(), value.to_string());
    }
    Ok(labels)
}

mod syntax {
    //! Kubernetes name syntax: DNS labels and subdomains, label keys and values,
    //! environment variable names and ConfigMap/Secret keys.

    use crate::crd::limits::{MAX_CONFIG_KEY, MAX_DNS_LABEL, MAX_DNS_SUBDOMAIN};

    /// The name part of a label key, and a label value.
    const MAX_LABEL_NAME: usize = MAX_DNS_LABEL;

    /// RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
    pub(super) fn is_dns_label(text: &str) -> bool {
        text.len() <= MAX_DNS_LABEL && has_dns_label_form(text)
    }

    /// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
    pub(super) fn is_dns_subdomain(text: &str) -> bool {
        text.len() <= MAX_DNS_SUBDOMAIN && text.split('.').all(has_dns_label_form)
    }

    /// The characters of a DNS label, whatever its length.
    pub(super) fn has_dns_label_form(text: &str) -> bool {
        let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        text.starts_with(alphanumeric)
            && text.ends_with(alphanumeric)
            && text.chars().all(|c| alphanumeric(c) || c == '-')
    }

    /// `[-._a-zA-Z][-._a-zA-Z0-9]*`.
    pub(super) fn is_env_var_name(text: &str) -> bool {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        !text.starts_with(|c: char| c.is_ascii_digit())
            && !text.is_empty()
            && text.chars().all(allowed)
    }

    /// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253, not `.`, `..` or `..*`.
    pub(super) fn check_config_key(text: &str) -> Result<(), &'static str> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if text.is_empty() {
            Err("a key must not be empty")
        } else if text.len() > MAX_CONFIG_KEY {
            Err("a key is at most 253 characters")
        } else if !text.chars().all(allowed) {
            Err("a key consists of letters, digits, '-', '_' and '.'")
        } else if text == "." || text.starts_with("..") {
            Err("a key must not be '.' or start with '..'")
        } else {
            Ok(())
        }
    }

    /// A qualified name: an optional DNS subdomain prefix and `/`, then a name of at most
    /// 63 characters, alphanumeric at both ends with `-`, `_` and `.` inside.
    pub(super) fn check_label_key(key: &str) -> Result<(), &'static str> {
        let name = match key.split_once('/') {
            Some((prefix, name)) => {
                if !is_dns_subdomain(prefix) {
                    return Err(
                        "the prefix before '/' must be a DNS subdomain such as example.com",
                    );
                }
                name
            }
            None => key,
        };
        if name.is_empty() {
            Err("the name part must not be empty")
        } else if name.len() > MAX_LABEL_NAME {
            Err("the name part is at most 63 characters")
        } else if !is_label_name_part(name) {
            Err(
                "the name part must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            )
        } else {
            Ok(())
        }
    }

    /// Empty, or at most 63 characters, alphanumeric at both ends with `-`, `_` and `.`
    /// inside.
    pub(super) fn check_label_value(value: &str) -> Result<(), &'static str> {
        if value.len() > MAX_LABEL_NAME {
            Err("a label value is at most 63 characters")
        } else if !value.is_empty() && !is_label_name_part(value) {
            Err(
                "a label value must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            )
        } else {
            Ok(())
        }
    }

    fn is_label_name_part(text: &str) -> bool {
        let alphanumeric = |c: char| c.is_ascii_alphanumeric();
        text.starts_with(alphanumeric)
            && text.ends_with(alphanumeric)
            && text
                .chars()
                .all(|c| alphanumeric(c) || matches!(c, '-' | '_' | '.'))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn dns_labels() {
            for good in ["a", "my-tenant", "0", "a1-b2", &"a".repeat(63)] {
                assert!(is_dns_label(good), "{good}");
            }
            for bad in ["", "-a", "a-", "A", "a.b", "a_b", "é", &"a".repeat(64)] {
                assert!(!is_dns_label(bad), "{bad}");
            }
        }

        #[test]
        fn dns_subdomains() {
            for good in ["a", "my-secret", "a.b.c", "example.com"] {
                assert!(is_dns_subdomain(good), "{good}");
            }
            for bad in ["", ".a", "a.", "a..b", "A", "a_b", &"a".repeat(254)] {
                assert!(!is_dns_subdomain(bad), "{bad}");
            }
        }

        #[test]
        fn env_var_names() {
            for good in ["LOG_LEVEL", "a", "_x", "-x", ".x", "x.y-z_1"] {
                assert!(is_env_var_name(good), "{good}");
            }
            for bad in ["", "1X", "A B", "A=B", "É"] {
                assert!(!is_env_var_name(bad), "{bad}");
            }
        }

        #[test]
        fn config_keys() {
            for good in ["a", "config.yaml", "_x", "-x", ".env", "A-1"] {
                assert!(check_config_key(good).is_ok(), "{good}");
            }
            for bad in ["", ".", "..", "..x", "a/b", "a b", &"a".repeat(254)] {
                assert!(check_config_key(bad).is_err(), "{bad}");
            }
        }

        #[test]
        fn label_keys() {
            for good in [
                "app",
                "App_1",
                "a.b-c",
                "example.com/app",
                "k8s.io/name",
                "x",
            ] {
                assert!(check_label_key(good).is_ok(), "{good}");
            }
            for bad in [
                "",
                "/app",
                "Example.com/app",
                "a/b/c",
                "app/",
                "-app",
                "app-",
                "a b",
                &"a".repeat(64),
            ] {
                assert!(check_label_key(bad).is_err(), "{bad}");
            }
        }

        #[test]
        fn label_values() {
            for good in ["", "prometheus", "v1.2_3-a", "A"] {
                assert!(check_label_value(good).is_ok(), "{good}");
            }
            for bad in ["-a", "a-", "a b", "a/b", &"a".repeat(64)] {
                assert!(check_label_value(bad).is_err(), "{bad}");
            }
        }
    }
}

mod backup;
#[cfg(test)]
mod crd_agreement;
mod placement;

pub use backup::check_schedule;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        AuthSpec, Autoscaling, Protocol, TaintEffect, Tenant, Toleration, TolerationOperator,
        TopologySpread, WhenUnsatisfiable,
    };
    use crate::{crd, redis_config};
    use proptest::prelude::*;

    const NAME: &str = "my-tenant";

    fn problems_of(spec: &TenantSpec) -> Vec<SpecProblem> {
        validate(NAME, spec)
    }

    /// The single problem `spec` has; fails if it has none or several.
    fn only_problem(spec: &TenantSpec) -> SpecProblem {
        match problems_of(spec).as_slice() {
            [problem] => problem.clone(),
            other => panic!("expected exactly one problem, got {other:#?}"),
        }
    }

    fn assert_only_problem(spec: &TenantSpec, field: &str, message_part: &str) {
        let problem = only_problem(spec);
        assert_eq!(problem.field, field, "{problem}");
        assert!(problem.message.contains(message_part), "{problem}");
    }

    fn request_limit(request: Option<&str>, limit: Option<&str>) -> RequestLimit {
        RequestLimit {
            request: request.map(QuantityValue::from),
            limit: limit.map(QuantityValue::from),
        }
    }

    fn with_server_cpu(request: Option<&str>, limit: Option<&str>) -> TenantSpec {
        let mut spec = TenantSpec::default();
        spec.server.resources = Some(Resources {
            cpu: Some(request_limit(request, limit)),
            memory: None,
        });
        spec
    }

    fn with_redis_memory(request: Option<&str>, limit: Option<&str>) -> TenantSpec {
        let mut spec = TenantSpec::default();
        spec.redis.resources = Some(Resources {
            cpu: None,
            memory: Some(request_limit(request, limit)),
        });
        spec
    }

    fn with_env(vars: Vec<EnvVar>) -> TenantSpec {
        let mut spec = TenantSpec::default();
        spec.server.env = vars;
        spec
    }

    fn literal(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from_source(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(source),
        }
    }

    fn key_ref(name: &str, key: &str) -> Option<KeyRef> {
        Some(KeyRef {
            name: name.into(),
            key: key.into(),
            optional: None,
        })
    }

    fn with_redis_config(entries: &[(&str, &str)]) -> TenantSpec {
        let mut spec = TenantSpec::default();
        spec.redis.config = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec
    }

    fn with_ingress(from: &[(&str, &str)], ports: &[i32]) -> TenantSpec {
        let mut spec = TenantSpec::default();
        spec.network_policy.ingress_rules = vec![IngressRule {
            description: None,
            from: from
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ports: ports
                .iter()
                .map(|port| PortRule {
                    protocol: Protocol::Tcp,
                    port: *port,
                })
                .collect(),
        }];
        spec
    }

    fn example(yaml: &str) -> Tenant {
        serde_yaml::from_str(yaml).expect("the example parses as a Tenant")
    }

    #[test]
    fn the_user_guide_examples_have_no_problems() {
        for yaml in [
            include_str!("../examples/basic-tenant.yaml"),
            include_str!("../examples/customized-tenant.yaml"),
        ] {
            let tenant = example(yaml);
            let name = tenant.metadata.name.clone().unwrap_or_default();
            assert_eq!(validate(&name, &tenant.spec), vec![], "{yaml}");
        }
    }

    #[test]
    fn the_default_spec_has_no_problems() {
        assert!(problems_of(&TenantSpec::default()).is_empty());
    }

    #[test]
    fn a_tenant_name_is_a_short_dns_label() {
        let spec = TenantSpec::default();
        assert!(validate(&"a".repeat(46), &spec).is_empty());
        for length in [47, 56, 57, 64, 300] {
            let long = validate(&"a".repeat(length), &spec);
            assert_eq!(long.len(), 1, "{long:?}");
            assert_eq!(long[0].field, "metadata.name");
            assert!(long[0].message.contains("at most 46"), "{}", long[0]);
        }
        for bad in [
            "My-Tenant",
            "my.tenant",
            "-x",
            "x-",
            "",
            "my_tenant",
            "7eleven",
            "0",
        ] {
            let problems = validate(bad, &spec);
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert!(
                problems[0]
                    .message
                    .contains("must start with a lower-case letter"),
                "{}",
                problems[0]
            );
        }
    }

    #[test]
    fn long_display_names_and_descriptions() {
        let mut spec = TenantSpec {
            display_name: Some("x".repeat(257)),
            ..TenantSpec::default()
        };
        assert_only_problem(&spec, "spec.displayName", "at most 256 characters");
        spec.display_name = None;
        spec.description = Some("é".repeat(4097));
        assert_only_problem(&spec, "spec.description", "at most 4096 characters");
    }

    #[test]
    fn server_replicas_are_from_1_to_100() {
        for replicas in [0, -1, 101, i32::MIN, i32::MAX] {
            let mut spec = TenantSpec::default();
            spec.server.replicas = replicas;
            assert_only_problem(&spec, "spec.server.replicas", "from 1 to 100");
        }
        let mut spec = TenantSpec::default();
        spec.server.replicas = 100;
        assert!(problems_of(&spec).is_empty());
    }

    #[test]
    fn redis_runs_exactly_one_replica() {
        let mut spec = TenantSpec::default();
        spec.redis.replicas = 3;
        assert_only_problem(&spec, "spec.redis.replicas", "independent masters");
    }

    #[test]
    fn images_are_non_empty_without_whitespace() {
        let mut spec = TenantSpec::default();
        spec.server.image = String::new();
        assert_only_problem(&spec, "spec.server.image", "an image is required");
        let mut spec = TenantSpec::default();
        spec.redis.image = "redis:7 alpine".into();
        assert_only_problem(&spec, "spec.redis.image", "whitespace");
        let mut spec = TenantSpec::default();
        spec.redis.image = "r".repeat(513);
        assert_only_problem(&spec, "spec.redis.image", "at most 512");
    }

    #[test]
    fn quantities_must_parse() {
        let spec = with_server_cpu(Some("lots"), None);
        assert_only_problem(
            &spec,
            "spec.server.resources.cpu.request",
            "\"lots\" is not a Kubernetes quantity",
        );
        let spec = with_redis_memory(None, Some("1GB"));
        assert_only_problem(&spec, "spec.redis.resources.memory.limit", "\"1GB\"");
    }

    #[test]
    fn quantities_must_be_positive() {
        let spec = with_server_cpu(Some("0"), None);
        assert_only_problem(
            &spec,
            "spec.server.resources.cpu.request",
            "greater than zero",
        );
        let spec = with_server_cpu(None, Some("-1"));
        assert_only_problem(
            &spec,
            "spec.server.resources.cpu.limit",
            "greater than zero",
        );
    }

    #[test]
    fn memory_is_whole_bytes() {
        let spec = with_redis_memory(Some("256m"), None);
        assert_only_problem(
            &spec,
            "spec.redis.resources.memory.request",
            "m means milli",
        );
        let spec = with_redis_memory(Some("0.5"), None);
        assert_only_problem(
            &spec,
            "spec.redis.resources.memory.request",
            "fraction of a byte",
        );
        assert!(problems_of(&with_server_cpu(Some("0.5"), None)).is_empty());
    }

    #[test]
    fn a_request_must_not_exceed_its_limit() {
        let spec = with_server_cpu(Some("1500m"), Some("1"));
        let problem = only_problem(&spec);
        assert_eq!(
            problem.to_string(),
            "spec.server.resources.cpu: the request (1500m) must not exceed the limit (1)"
        );
        let spec = with_redis_memory(Some("1Gi"), Some("512Mi"));
        assert_only_problem(
            &spec,
            "spec.redis.resources.memory",
            "the request (1Gi) must not exceed the limit (512Mi)",
        );
        assert!(problems_of(&with_server_cpu(Some("1"), Some("1000m"))).is_empty());
    }

    #[test]
    fn storage_is_a_positive_whole_quantity() {
        for (storage, message) in [
            ("big", "not a Kubernetes quantity"),
            ("0", "greater than zero"),
            ("", "empty string"),
            ("1.5", "fraction of a byte"),
        ] {
            let mut spec = TenantSpec::default();
            spec.redis.storage = storage.into();
            assert_only_problem(&spec, "spec.redis.storage", message);
        }
    }

    #[test]
    fn env_names_are_valid() {
        let spec = with_env(vec![literal("1BAD", "x")]);
        assert_only_problem(
            &spec,
            "spec.server.env[0].name",
            "not a valid variable name",
        );
        let spec = with_env(vec![literal("", "x")]);
        assert_only_problem(
            &spec,
            "spec.server.env[0].name",
            "not a valid variable name",
        );
        let spec = with_env(vec![literal(&"A".repeat(257), "x")]);
        assert_only_problem(&spec, "spec.server.env[0].name", "at most 256");
    }

    #[test]
    fn env_names_are_unique() {
        let spec = with_env(vec![
            literal("A", "1"),
            literal("B", "2"),
            literal("A", "3"),
        ]);
        assert_only_problem(
            &spec,
            "spec.server.env[2].name",
            "already set by spec.server.env[0]",
        );
    }

    #[test]
    fn operator_env_cannot_be_overridden() {
        for name in OPERATOR_ENV {
            let spec = with_env(vec![literal(name, "x")]);
            assert_only_problem(&spec, "spec.server.env[0].name", "set by the operator");
        }
    }

    #[test]
    fn env_needs_exactly_one_of_value_and_value_from() {
        let secret = EnvVarSource {
            secret_key_ref: key_ref("creds", "password"),
            config_map_key_ref: None,
        };
        let both = EnvVar {
            value_from: Some(secret.clone()),
            ..literal("A", "x")
        };
        assert_only_problem(&with_env(vec![both]), "spec.server.env[0]", "not both");
        let neither = EnvVar {
            name: "A".into(),
            value: None,
            value_from: None,
        };
        assert_only_problem(&with_env(vec![neither]), "spec.server.env[0]", "set value");
        assert!(problems_of(&with_env(vec![literal("A", "")])).is_empty());
        assert!(problems_of(&with_env(vec![from_source("A", secret)])).is_empty());
    }

    #[test]
    fn value_from_needs_exactly_one_reference() {
        let both = EnvVarSource {
            secret_key_ref: key_ref("a", "b"),
            config_map_key_ref: key_ref("a", "b"),
        };
        assert_only_problem(
            &with_env(vec![from_source("A", both)]),
            "spec.server.env[0].valueFrom",
            "exactly one of secretKeyRef and configMapKeyRef",
        );
        assert_only_problem(
            &with_env(vec![from_source("A", EnvVarSource::default())]),
            "spec.server.env[0].valueFrom",
            "exactly one",
        );
    }

    #[test]
    fn references_name_valid_objects_and_keys() {
        let bad_name = EnvVarSource {
            secret_key_ref: None,
            config_map_key_ref: key_ref("My_Config", "settings.yaml"),
        };
        assert_only_problem(
            &with_env(vec![from_source("A", bad_name)]),
            "spec.server.env[0].valueFrom.configMapKeyRef.name",
            "not a ConfigMap name",
        );
        let bad_key = EnvVarSource {
            secret_key_ref: key_ref("creds", "../etc/passwd"),
            config_map_key_ref: None,
        };
        assert_only_problem(
            &with_env(vec![from_source("A", bad_key)]),
            "spec.server.env[0].valueFrom.secretKeyRef.key",
            "not a valid Secret key",
        );
    }

    #[test]
    fn too_many_env_vars() {
        let vars = (0..129).map(|i| literal(&format!("V{i}"), "x")).collect();
        assert_only_problem(&with_env(vars), "spec.server.env", "at most 128 variables");
    }

    #[test]
    fn redis_config_entries_are_checked() {
        let spec = with_redis_config(&[("maxmemory", "256Mi")]);
        assert_eq!(
            only_problem(&spec).to_string(),
            "spec.redis.config.maxmemory: \"256Mi\" is a Kubernetes quantity; Redis expects units like 256mb or 1gb"
        );
        assert_only_problem(
            &with_redis_config(&[("port", "7000")]),
            "spec.redis.config.port",
            "set by the operator",
        );
        assert_only_problem(
            &with_redis_config(&[("requirepass", "x")]),
            "spec.redis.config.requirepass",
            "ConfigMap",
        );
        assert_only_problem(
            &with_redis_config(&[("bogus", "1")]),
            "spec.redis.config.bogus",
            "not a supported",
        );
        assert!(
            problems_of(&with_redis_config(&[("maxmemory", "100mb"), ("save", "")])).is_empty()
        );
    }

    #[test]
    fn too_many_redis_settings() {
        let mut spec = TenantSpec::default();
        spec.redis.config = (0..65).map(|i| (format!("x{i}"), "0".into())).collect();
        let problems = problems_of(&spec);
        assert_eq!(problems[0].field, "spec.redis.config");
        assert!(
            problems[0].message.contains("at most 64 settings"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn maxmemory_must_fit_the_memory_limit() {
        let mut spec = with_redis_memory(Some("128Mi"), Some("256Mi"));
        spec.redis.config.insert("maxmemory".into(), "512mb".into());
        assert_only_problem(
            &spec,
            "spec.redis.config.maxmemory",
            "more than the Redis memory limit (256Mi)",
        );
        spec.redis.config.insert("maxmemory".into(), "200mb".into());
        assert!(problems_of(&spec).is_empty());
    }

    #[test]
    fn allowed_namespaces_are_dns_labels() {
        let mut spec = TenantSpec::default();
        spec.network_policy.allowed_namespaces = vec!["monitoring".into(), "Bad_NS".into()];
        assert_only_problem(
            &spec,
            "spec.networkPolicy.allowedNamespaces[1]",
            "not a namespace name",
        );
        spec.network_policy.allowed_namespaces = (0..65).map(|i| format!("ns{i}")).collect();
        assert_only_problem(
            &spec,
            "spec.networkPolicy.allowedNamespaces",
            "at most 64 namespaces",
        );
    }

    #[test]
    fn an_empty_selector_would_match_every_pod() {
        let spec = with_ingress(&[], &[]);
        assert_only_problem(
            &spec,
            "spec.networkPolicy.ingressRules[0].from",
            "from every pod in every namespace",
        );
        let mut spec = TenantSpec::default();
        spec.network_policy.egress_rules = vec![EgressRule::default()];
        assert_only_problem(
            &spec,
            "spec.networkPolicy.egressRules[0].to",
            "to every pod in every namespace",
        );
    }

    #[test]
    fn rule_labels_use_kubernetes_label_syntax() {
        assert!(
            problems_of(&with_ingress(
                &[("app.kubernetes.io/name", "prometheus")],
                &[9090]
            ))
            .is_empty()
        );
        assert_only_problem(
            &with_ingress(&[("bad key", "x")], &[]),
            "spec.networkPolicy.ingressRules[0].from",
            "label key \"bad key\" is not valid",
        );
        assert_only_problem(
            &with_ingress(&[("app", "-bad-")], &[]),
            "spec.networkPolicy.ingressRules[0].from",
            "the value \"-bad-\" of label \"app\" is not valid",
        );
        assert!(problems_of(&with_ingress(&[("app", "")], &[])).is_empty());
    }

    #[test]
    fn ports_are_from_1_to_65535() {
        for port in [0, -1, 65536] {
            assert_only_problem(
                &with_ingress(&[("app", "x")], &[80, port]),
                "spec.networkPolicy.ingressRules[0].ports[1].port",
                "from 1 to 65535",
            );
        }
        assert!(problems_of(&with_ingress(&[("app", "x")], &[1, 65535])).is_empty());
    }

    #[test]
    fn rule_counts_and_descriptions() {
        let mut spec = with_ingress(&[("app", "x")], &[]);
        spec.network_policy.ingress_rules[0].description = Some("d".repeat(1025));
        assert_only_problem(
            &spec,
            "spec.networkPolicy.ingressRules[0].description",
            "at most 1024",
        );
        let rule = spec.network_policy.ingress_rules[0].clone();
        spec.network_policy.ingress_rules = vec![
            IngressRule {
                description: None,
                ..rule
            };
            33
        ];
        assert_only_problem(&spec, "spec.networkPolicy.ingressRules", "at most 32 rules");
    }

    #[test]
    fn an_admin_user_id_is_not_empty() {
        let mut spec = TenantSpec {
            auth: Some(AuthSpec {
                admin_user_id: Some(String::new()),
            }),
            ..TenantSpec::default()
        };
        assert_only_problem(&spec, "spec.auth.adminUserId", "must not be empty");
        spec.auth = Some(AuthSpec {
            admin_user_id: Some("admin".into()),
        });
        assert!(problems_of(&spec).is_empty());
    }

    #[test]
    fn problems_are_summarized_in_one_line() {
        let problem = |i: usize| SpecProblem {
            field: format!("spec.f{i}"),
            message: "bad".into(),
        };
        assert_eq!(summarize(&[]), "");
        assert_eq!(
            summarize(&[problem(1), problem(2)]),
            "spec.f1: bad; spec.f2: bad"
        );
        let many: Vec<SpecProblem> = (0..12).map(problem).collect();
        let summary = summarize(&many);
        assert!(
            summary.starts_with("spec.f0: bad; spec.f1: bad;"),
            "{summary}"
        );
        assert!(summary.ends_with("spec.f9: bad; and 2 more"), "{summary}");
    }

    mod arbitrary {
        include!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/common/arbitrary_spec.rs"
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn validation_never_panics_and_is_deterministic(
            name in prop_oneof![arbitrary::text(), "[a-z0-9-]{1,60}"],
            spec in arbitrary::spec(),
        ) {
            let first = validate(&name, &spec);
            prop_assert_eq!(&first, &validate(&name, &spec));
            for problem in &first {
                prop_assert!(
                    problem.field == "metadata.name" || problem.field.starts_with("spec."),
                    "{}", problem
                );
                prop_assert!(!problem.message.is_empty());
            }
            let _ = summarize(&first);
        }
    }
}
