//! The `Tenant` custom resource (`tenants.neurallog.io/v1`, cluster-scoped).
//!
//! Everything the API server can check at admission is expressed here, in the schema and
//! in CEL rules, each with a message naming the field. What CEL cannot check is checked
//! by [`crate::validation`] and reported on status.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DEFAULT_SERVER_IMAGE: &str = "neurallog/server:latest";
pub const DEFAULT_REDIS_IMAGE: &str = "redis:7-alpine";
pub const DEFAULT_REDIS_STORAGE: &str = "1Gi";

/// CEL transition rule of `spec.redis.storage`: a volume can grow, never shrink. A value
/// that is no quantity is left to the rule that says so.
const STORAGE_NEVER_SHRINKS: &str =
    "!isQuantity(self) || !isQuantity(oldSelf) || !quantity(self).isLessThan(quantity(oldSelf))";

/// What the API server answers a smaller `spec.redis.storage`.
pub const STORAGE_SHRINK_MESSAGE: &str = "spec.redis.storage cannot shrink: a volume can only grow; to use a smaller volume, delete the tenant and create it again";

/// Longest DNS label: namespace and Service names, and every label value.
pub const DNS_LABEL_MAX: usize = 63;
/// Suffix of the Redis StatefulSet and headless Service, `<tenant>-redis`.
pub const REDIS_SUFFIX: &str = "-redis";
/// The StatefulSet controller labels each pod `controller-revision-hash: <statefulset>-<hash>`
/// with a hash of up to 10 characters, and creates no pod when that value exceeds 63
/// characters (kubernetes/kubernetes#64023). This is the longest derived name or label.
pub const REVISION_HASH_SUFFIX_MAX: usize = 1 + 10;
/// The longest tenant name whose every derived name and label fits: see
/// [`crate::render::derived_names`].
pub const MAX_TENANT_NAME_LEN: usize =
    DNS_LABEL_MAX - REDIS_SUFFIX.len() - REVISION_HASH_SUFFIX_MAX;
/// A tenant name: a DNS-1035 label (Services `<tenant>-redis` and `<tenant>-server` must
/// start with a letter), lower case, no dots.
pub const TENANT_NAME_PATTERN: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";
/// A namespace name: an RFC 1123 label.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// An environment variable name: letters, digits, '_', '-' and '.', not starting with a digit.
pub const ENV_NAME_PATTERN: &str = "^[-._a-zA-Z][-._a-zA-Z0-9]*$";
/// The form of a `spec.redis.config` key: a lower-case redis.conf directive.
pub const REDIS_CONFIG_KEY_PATTERN: &str = "^[a-z][a-z0-9-]*$";
/// The shape of a backup schedule as admission checks it: five space-separated fields of
/// cron characters, or one of the macros a CronJob takes. The operator checks each field's
/// values too ([`crate::validation`]).
pub const BACKUP_SCHEDULE_PATTERN: &str = "^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*,/?-]+( [0-9A-Za-z*,/?-]+){4})$";
/// Snapshots kept when `spec.redis.backup.keep` is not set.
pub const DEFAULT_BACKUP_KEEP: i32 = 7;

/// Limits of the spec. The CRD's schema is built from them, and [`crate::validation`]
/// checks them again, in case the CRD installed is older than the operator.
pub mod limits {
    use super::DNS_LABEL_MAX;

    pub const MAX_DISPLAY_NAME: usize = 256;
    pub const MAX_DESCRIPTION: usize = 4096;
    pub const MAX_SERVER_REPLICAS: i32 = 100;
    pub const MAX_IMAGE: usize = 512;
    pub const MAX_ENV: usize = 128;
    pub const MAX_ENV_NAME: usize = 256;
    pub const MAX_REDIS_CONFIG: usize = 64;
    /// Checked at admission only: a longer value is not a value any directive takes.
    pub const MAX_REDIS_CONFIG_VALUE: usize = 1024;
    /// A quantity as written (CPU, memory, storage); checked at admission only.
    pub const MAX_QUANTITY: usize = 64;
    pub const MAX_ALLOWED_NAMESPACES: usize = 64;
    pub const MAX_RULES: usize = 32;
    pub const MAX_RULE_LABELS: usize = 32;
    pub const MAX_RULE_PORTS: usize = 32;
    pub const MAX_RULE_DESCRIPTION: usize = 1024;
    pub const MAX_ADMIN_USER_ID: usize = 256;
    pub const MAX_PORT: i32 = 65535;
    pub const MAX_NODE_SELECTOR: usize = 32;
    /// A CPU target of 10 times the request is already far past any sensible one.
    pub const MAX_CPU_TARGET_PERCENT: i32 = 1000;
    pub const MAX_TOLERATIONS: usize = 32;
    pub const MAX_TOPOLOGY_SPREAD: usize = 8;
    /// The largest useful skew: more than the server's replica limit never constrains.
    pub const MAX_SKEW: i32 = 100;
    pub const MAX_IMAGE_PULL_SECRETS: usize = 16;
    /// Backups kept: a hundred daily snapshots is already more than three months.
    pub const MAX_BACKUP_KEEP: i32 = 100;
    /// A cron schedule as written: five fields with lists and ranges, or a macro.
    pub const MAX_BACKUP_SCHEDULE: usize = 128;
    /// A label key: a DNS subdomain prefix (253), '/', a name (63).
    pub const MAX_LABEL_KEY: usize = 253 + 1 + 63;
    /// The longest `tolerationSeconds` Kubernetes keeps a pod on a tainted node for: a
    /// year is already "forever" for an eviction delay.
    pub const MAX_TOLERATION_SECONDS: i64 = 365 * 24 * 3600;
    /// A namespace name, a label value, the name part of a label key.
    pub const MAX_DNS_LABEL: usize = DNS_LABEL_MAX;
    /// A Secret or ConfigMap name.
    pub const MAX_DNS_SUBDOMAIN: usize = 253;
    /// A key of a Secret or ConfigMap.
    pub const MAX_CONFIG_KEY: usize = 253;
}

/// Environment variables the operator sets on the server; users may not shadow them.
pub const OPERATOR_ENV: [&str; 6] = [
    "PORT",
    "TENANT_ID",
    "AUTH_URL",
    "STORAGE_TYPE",
    "REDIS_HOST",
    "REDIS_PORT",
];

/// Redis settings that would break the pod or escape its volume if a user changed them.
pub const MANAGED_REDIS_KEYS: [&str; 14] = [
    "bind",
    "port",
    "dir",
    "dbfilename",
    "appendfilename",
    "appenddirname",
    "include",
    "rename-command",
    "daemonize",
    "pidfile",
    "logfile",
    "unixsocket",
    "protected-mode",
    "supervised",
];

/// Redis settings that hold secrets: they do not belong in a ConfigMap, and a password
/// breaks the readiness probe.
pub const SECRET_REDIS_KEYS: [&str; 5] =
    ["requirepass", "masterauth", "masteruser", "aclfile", "user"];

/// Every `spec.redis.config` key a user may not set: the managed ones, then the secrets.
pub const RESERVED_REDIS_KEYS: [&str; 19] = concat(MANAGED_REDIS_KEYS, SECRET_REDIS_KEYS);

/// `first` followed by `second`; `N` must be the sum of their lengths (checked at compile
/// time, where this is evaluated).
const fn concat<const A: usize, const B: usize, const N: usize>(
    first: [&'static str; A],
    second: [&'static str; B],
) -> [&'static str; N] {
    assert!(A + B == N, "concat: N must be A + B");
    let mut all = [""; N];
    let mut i = 0;
    while i < A {
        all[i] = first[i];
        i += 1;
    }
    while i < N {
        all[i] = second[i - A];
        i += 1;
    }
    all
}

/// A NeuralLog tenant: an isolated namespace with its own Redis and NeuralLog server,
/// network policies, quota and an Auth service registration.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "neurallog.io",
    version = "v1",
    kind = "Tenant",
    plural = "tenants",
    singular = "tenant",
    shortname = "tn",
    category = "neurallog",
    status = "TenantStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Display Name","type":"string","jsonPath":".spec.displayName"}"#,
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".status.namespace"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new(format!("size(self.metadata.name) <= {MAX_TENANT_NAME_LEN}")).message(name_length_message().as_str()).field_path(".metadata.name"),
    validation = Rule::new(format!("self.metadata.name.matches('{TENANT_NAME_PATTERN}')")).message(NAME_FORM_MESSAGE).field_path(".metadata.name")
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Human-readable name shown by `kubectl get tenants`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_DISPLAY_NAME))]
    pub display_name: Option<String>,

    /// Free-form description of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_DESCRIPTION))]
    pub description: Option<String>,

    /// The NeuralLog server: Deployment and Service `<tenant>-server` (port 3030).
    #[serde(default)]
    pub server: ServerSpec,

    /// Redis: StatefulSet and headless Service `<tenant>-redis` (port 6379) with a volume.
    #[serde(default)]
    pub redis: RedisSpec,

    /// Network isolation of the tenant namespace.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Registration with the NeuralLog Auth service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Secrets (of type kubernetes.io/dockerconfigjson, in the tenant namespace
    /// `tenant-<name>`) used to pull the server and Redis images from private registries.
    /// Create them in that namespace once it exists; pods wait in ImagePullBackOff until
    /// then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = limits::MAX_IMAGE_PULL_SECRETS),
        inner(length(min = 1, max = limits::MAX_DNS_SUBDOMAIN))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub image_pull_secrets: Vec<String>,

    /// While true, the API server refuses to delete this Tenant, and so its namespace and
    /// data (the ValidatingAdmissionPolicy neurallog-tenant-deletion-protection, installed
    /// with the CRD). Set it to false first to delete the tenant. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deletion_protection: bool,
}

/// The NeuralLog server of the tenant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Number of server pods (at least 1). Ignored while `autoscaling` is set.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = limits::MAX_SERVER_REPLICAS))]
    pub replicas: i32,

    /// Server container image.
    #[serde(default = "default_server_image")]
    #[schemars(length(min = 1, max = limits::MAX_IMAGE))]
    pub image: String,

    /// CPU and memory requests and limits of each server pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Extra environment variables for the server. Names must be unique and may not
    /// shadow the ones the operator sets (PORT, TENANT_ID, AUTH_URL, STORAGE_TYPE,
    /// REDIS_HOST, REDIS_PORT).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_ENV))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<EnvVar>,

    /// Let a HorizontalPodAutoscaler size the server on CPU between minReplicas and
    /// maxReplicas. The operator then leaves the replica count to it (`replicas` is
    /// ignored), sizes the quota for maxReplicas plus one surge pod, and counts the server
    /// ready once minReplicas pods are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// Run the server pods only on nodes with all these labels (a Pod's nodeSelector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = limits::MAX_NODE_SELECTOR, "additionalProperties" = {"type": "string", "maxLength": limits::MAX_DNS_LABEL}))]
    pub node_selector: BTreeMap<String, String>,

    /// Taints of nodes the server pods tolerate (a Pod's tolerations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_TOLERATIONS))]
    pub tolerations: Vec<Toleration>,

    /// Spread the server pods over nodes or zones: each entry becomes a topology spread
    /// constraint over the server pods of this tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_TOPOLOGY_SPREAD))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["topologyKey"]))]
    pub topology_spread: Vec<TopologySpread>,
}

/// An environment variable: a literal `value`, or `valueFrom` a Secret or ConfigMap key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))").message("spec.server.env: set either value or valueFrom, not both"))]
#[x_kube(validation = Rule::new(format!("!(self.name in {})", cel_list(&OPERATOR_ENV))).message(format!("spec.server.env: {} are set by the operator and cannot be overridden", prose_list(&OPERATOR_ENV)).as_str()))]
pub struct EnvVar {
    /// Variable name: letters, digits, '_', '-' and '.', not starting with a digit.
    #[schemars(
        length(min = 1, max = limits::MAX_ENV_NAME),
        regex(pattern = ENV_NAME_PATTERN)
    )]
    pub name: String,

    /// Literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,

    /// Take the value from a key of a Secret or ConfigMap in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Where an environment variable's value comes from: exactly one of the two references.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)").message("spec.server.env.valueFrom: set exactly one of secretKeyRef and configMapKeyRef"))]
pub struct EnvVarSource {
    /// A key of a Secret in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    /// A key of a ConfigMap in the tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
}

/// A key of a named Secret or ConfigMap.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the Secret or ConfigMap.
    #[schemars(length(min = 1, max = limits::MAX_DNS_SUBDOMAIN))]
    pub name: String,
    /// The key within it.
    #[schemars(length(min = 1, max = limits::MAX_CONFIG_KEY))]
    pub key: String,
    /// Start the pod even if the object or key is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// CPU and memory of one container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU request and limit, as Kubernetes quantities (e.g. 200m, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<RequestLimit>,
    /// Memory request and limit, as Kubernetes quantities (e.g. 256Mi, 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<RequestLimit>,
}

/// A request and a limit; the request may not exceed the limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.request) || !has(self.limit) || !isQuantity(string(self.request)) || !isQuantity(string(self.limit)) || quantity(string(self.request)).compareTo(quantity(string(self.limit))) <= 0").message("resources: request must not exceed limit"))]
pub struct RequestLimit {
    /// Guaranteed amount (a Kubernetes quantity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("resources: request must be a positive Kubernetes quantity such as 200m, 1, 256Mi or 1Gi"))]
    pub request: Option<QuantityValue>,
    /// Maximum amount (a Kubernetes quantity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))").message("resources: limit must be a positive Kubernetes quantity such as 500m, 1, 512Mi or 2Gi"))]
    pub limit: Option<QuantityValue>,
}

/// A Kubernetes quantity as the user wrote it: `cpu: 1` and `cpu: "1"` are both accepted,
/// like in a Pod spec.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct QuantityValue(pub String);

impl<'de> Deserialize<'de> for QuantityValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        Ok(QuantityValue(match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        }))
    }
}

impl schemars::JsonSchema for QuantityValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "QuantityValue".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Kubernetes quantity, such as 200m, 1, 256Mi or 1Gi.",
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string", "maxLength": limits::MAX_QUANTITY}]
        })
    }
}

impl QuantityValue {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for QuantityValue {
    fn from(s: &str) -> Self {
        QuantityValue(s.to_string())
    }
}

/// The tenant's Redis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("spec.redis.storageClassName is immutable: a StatefulSet's volume claim template cannot change; to use another class, delete the tenant and create it again"))]
pub struct RedisSpec {
    /// Number of Redis pods. Only 1 is supported: more replicas without replication
    /// would be independent masters with different data.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self == 1").message("spec.redis.replicas: only 1 is supported (more replicas without replication would be independent masters with different data)"))]
    pub replicas: i32,

    /// Redis container image.
    #[serde(default = "default_redis_image")]
    #[schemars(length(min = 1, max = limits::MAX_IMAGE))]
    pub image: String,

    /// CPU and memory requests and limits of the Redis pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// Size of the Redis data volume. It can grow, never shrink: the operator expands the
    /// volume in place when its StorageClass allows volume expansion (the tenant shows
    /// Reconciling, reason Resizing, until it has), and reports Stalled naming the class
    /// when it does not.
    #[serde(default = "default_redis_storage")]
    #[schemars(length(min = 1, max = limits::MAX_QUANTITY))]
    #[x_kube(validation = Rule::new(STORAGE_NEVER_SHRINKS).message(STORAGE_SHRINK_MESSAGE))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.redis.storage must be a positive Kubernetes quantity such as 1Gi"))]
    pub storage: String,

    /// Extra redis.conf settings, key to value (for example maxmemory-policy:
    /// allkeys-lru, appendonly: "yes"). Sizes use Redis units (256mb, not 256Mi). Keys
    /// that would break the pod or escape its volume (bind, port, dir, dbfilename,
    /// include, rename-command, ...) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = limits::MAX_REDIS_CONFIG, "additionalProperties" = {"type": "string", "maxLength": limits::MAX_REDIS_CONFIG_VALUE}))]
    #[x_kube(validation = Rule::new(format!("self.all(k, !(k in {}))", cel_list(&RESERVED_REDIS_KEYS))).message(format!("spec.redis.config: {} are managed by the operator; {} hold secrets, which do not belong in a ConfigMap", prose_list(&MANAGED_REDIS_KEYS), prose_list(&SECRET_REDIS_KEYS)).as_str()))]
    #[x_kube(validation = Rule::new(format!("self.all(k, k.matches('{REDIS_CONFIG_KEY_PATTERN}'))")).message("spec.redis.config: keys are lower-case redis.conf directives such as maxmemory-policy"))]
    #[x_kube(validation = Rule::new("self.all(k, !self[k].contains('\\n') && !self[k].contains('\\r'))").message("spec.redis.config: values must be a single line"))]
    pub config: BTreeMap<String, String>,

    /// StorageClass of the Redis data volume; the cluster's default class when unset.
    /// Cannot be changed after creation (a StatefulSet's volume claim templates are
    /// immutable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_DNS_SUBDOMAIN))]
    pub storage_class_name: Option<String>,

    /// Run the Redis pods only on nodes with all these labels (a Pod's nodeSelector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = limits::MAX_NODE_SELECTOR, "additionalProperties" = {"type": "string", "maxLength": limits::MAX_DNS_LABEL}))]
    pub node_selector: BTreeMap<String, String>,

    /// Taints of nodes the Redis pods tolerate (a Pod's tolerations).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_TOLERATIONS))]
    pub tolerations: Vec<Toleration>,

    /// Spread the Redis pods over nodes or zones: each entry becomes a topology spread
    /// constraint over the Redis pods of this tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_TOPOLOGY_SPREAD))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["topologyKey"]))]
    pub topology_spread: Vec<TopologySpread>,

    /// Keep the Redis data volume when the tenant is deleted: before its namespace goes,
    /// the volume's PersistentVolume is switched to the Retain reclaim policy and labelled
    /// neurallog.io/tenant=<tenant> (find it with `kubectl get pv -l
    /// neurallog.io/tenant=<tenant>`). A new tenant can start from it (README: Restoring a
    /// tenant from a retained volume). Default false: the volume goes with the tenant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retain_storage: bool,

    /// Scheduled RDB snapshots of Redis into the claim `redis-backups` of the tenant
    /// namespace (CronJob `redis-backup`). Removing it stops the backups; the claim and
    /// the snapshots in it stay until the tenant is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<RedisBackup>,
}

/// Scheduled snapshots of the tenant's Redis (`redis-cli --rdb`), the newest `keep` kept.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RedisBackup {
    /// When to take a snapshot, in UTC: a five-field cron schedule (minute hour
    /// day-of-month month day-of-week, such as "0 3 * * *" for 03:00 every day) or one of
    /// @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually.
    #[schemars(length(min = 1, max = limits::MAX_BACKUP_SCHEDULE))]
    #[x_kube(validation = Rule::new(format!("self.matches('{BACKUP_SCHEDULE_PATTERN}')")).message(BACKUP_SCHEDULE_MESSAGE))]
    pub schedule: String,

    /// How many snapshots to keep, newest first (1 to 100, default 7); older ones are
    /// deleted after each successful backup.
    #[serde(default = "default_backup_keep")]
    #[schemars(range(min = 1, max = limits::MAX_BACKUP_KEEP))]
    pub keep: i32,

    /// Size of the backup claim `redis-backups`. Default: (keep + 1) x spec.redis.storage,
    /// room for `keep` snapshots and the one being taken, each at most the size of the
    /// Redis volume. The claim is sized when it is created; later changes do not resize it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_QUANTITY))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.redis.backup.storage must be a positive Kubernetes quantity such as 8Gi"))]
    pub storage: Option<String>,
}

/// Why a backup schedule has its form, as admission says it.
pub const BACKUP_SCHEDULE_MESSAGE: &str = "spec.redis.backup.schedule must be a cron schedule \
     of five space-separated fields (minute hour day-of-month month day-of-week), such as \
     '0 3 * * *', or one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually";

fn default_backup_keep() -> i32 {
    DEFAULT_BACKUP_KEEP
}

/// Horizontal autoscaling of the server on CPU utilization.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("spec.server.autoscaling: minReplicas must not exceed maxReplicas"))]
pub struct Autoscaling {
    /// The fewest server pods (at least 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = limits::MAX_SERVER_REPLICAS))]
    pub min_replicas: i32,
    /// The most server pods.
    #[schemars(range(min = 1, max = limits::MAX_SERVER_REPLICAS))]
    pub max_replicas: i32,
    /// The average CPU use the autoscaler aims for, in percent of the pods' CPU request
    /// (above 100 lets pods use CPU beyond their request).
    #[serde(
        default = "default_cpu_target",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = limits::MAX_CPU_TARGET_PERCENT))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_cpu_target() -> i32 {
    80
}

/// How many server pods run: a fixed count, or the autoscaler's choice within bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerScale {
    Fixed(i32),
    Autoscaled { min: i32, max: i32 },
}

impl ServerScale {
    /// The most pods the server may run (before a rollout's surge pod).
    pub fn max(self) -> i32 {
        match self {
            ServerScale::Fixed(n) => n,
            ServerScale::Autoscaled { max, .. } => max,
        }
    }
}

impl ServerSpec {
    pub fn scale(&self) -> ServerScale {
        match &self.autoscaling {
            Some(a) => ServerScale::Autoscaled {
                min: a.min_replicas,
                max: a.max_replicas,
            },
            None => ServerScale::Fixed(self.replicas),
        }
    }
}

/// A taint the pods tolerate, as in a Pod's tolerations.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.operator != 'Exists' || !has(self.value) || self.value == ''").message("tolerations: operator Exists takes no value"))]
#[x_kube(validation = Rule::new("(has(self.key) && self.key != '') || self.operator == 'Exists'").message("tolerations: a toleration without a key must use operator Exists (it then tolerates every taint)"))]
#[x_kube(validation = Rule::new("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')").message("tolerations: tolerationSeconds applies only to effect NoExecute"))]
pub struct Toleration {
    /// The taint's key (a label key); empty with operator Exists matches every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_LABEL_KEY))]
    pub key: Option<String>,
    /// Equal (the taint's value must be `value`) or Exists (any value).
    #[serde(default)]
    pub operator: TolerationOperator,
    /// The taint's value, with operator Equal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_DNS_LABEL))]
    pub value: Option<String>,
    /// The taint effect to tolerate: NoSchedule, PreferNoSchedule or NoExecute; every
    /// effect when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,
    /// With effect NoExecute: how long a pod stays on a node after the taint appears;
    /// forever when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = limits::MAX_TOLERATION_SECONDS))]
    pub toleration_seconds: Option<i64>,
}

/// How a toleration matches a taint's value.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

/// What a taint does to pods that do not tolerate it.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// Spread a component's pods over the values of a node label.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpread {
    /// The node label whose values are the domains, such as kubernetes.io/hostname (one
    /// domain per node) or topology.kubernetes.io/zone.
    #[schemars(length(min = 1, max = limits::MAX_LABEL_KEY))]
    pub topology_key: String,
    /// The most the number of pods may differ between two domains.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = limits::MAX_SKEW))]
    pub max_skew: i32,
    /// DoNotSchedule (a pod that would break the skew waits) or ScheduleAnyway (the
    /// scheduler only prefers spreading).
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
}

/// What the scheduler does with a pod that would break a spread.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum WhenUnsatisfiable {
    #[default]
    DoNotSchedule,
    ScheduleAnyway,
}

/// Where a component's pods may run, as both specs declare it.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    pub node_selector: &'a BTreeMap<String, String>,
    pub tolerations: &'a [Toleration],
    pub topology_spread: &'a [TopologySpread],
}

impl ServerSpec {
    pub fn placement(&self) -> Placement<'_> {
        Placement {
            node_selector: &self.node_selector,
            tolerations: &self.tolerations,
            topology_spread: &self.topology_spread,
        }
    }
}

impl RedisSpec {
    pub fn placement(&self) -> Placement<'_> {
        Placement {
            node_selector: &self.node_selector,
            tolerations: &self.tolerations,
            topology_spread: &self.topology_spread,
        }
    }
}

/// Network isolation of the tenant namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create NetworkPolicies: deny by default; Redis accepts only its own server pods on
    /// 6379; the server port 3030 is open to the tenant's namespace, `allowedNamespaces` and
    /// the ingress controllers; DNS and Auth egress; then the custom rules.
    #[serde(default = "yes")]
    pub enabled: bool,

    /// Namespaces whose pods may reach the tenant's server port (3030), never Redis. Empty
    /// means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = limits::MAX_ALLOWED_NAMESPACES),
        inner(
            length(min = 1, max = limits::MAX_DNS_LABEL),
            regex(pattern = DNS_LABEL_PATTERN)
        )
    )]
    pub allowed_namespaces: Vec<NamespaceName>,

    /// Extra ingress rules, one NetworkPolicy each, into the server pods only (never Redis)
    /// from pods of the tenant's namespace or of `allowedNamespaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_RULES))]
    pub ingress_rules: Vec<IngressRule>,

    /// Extra egress rules, one NetworkPolicy each, out of the server pods only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_RULES))]
    pub egress_rules: Vec<EgressRule>,
}

/// A namespace name (a DNS label).
pub type NamespaceName = String;

/// Allow traffic into the tenant's server pods (never Redis) from pods with these labels
/// in the tenant's namespace or in `allowedNamespaces`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IngressRule {
    /// What the rule is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_RULE_DESCRIPTION))]
    pub description: Option<String>,
    /// Labels of the pods allowed in; they must run in the tenant's namespace or in one of
    /// `allowedNamespaces` (pods elsewhere are not admitted). Empty means every pod there.
    #[serde(default)]
    #[schemars(extend("maxProperties" = limits::MAX_RULE_LABELS, "additionalProperties" = {"type": "string", "maxLength": limits::MAX_DNS_LABEL}))]
    pub from: BTreeMap<String, String>,
    /// Ports of the server pods the rule opens; empty means all ports of the server pods
    /// (never Redis's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_RULE_PORTS))]
    pub ports: Vec<PortRule>,
}

/// Allow traffic out of the tenant's server pods (not Redis) to pods with these labels.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// What the rule is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_RULE_DESCRIPTION))]
    pub description: Option<String>,
    /// Labels of the pods (in any namespace) the server may reach. Empty means every pod.
    #[serde(default)]
    #[schemars(extend("maxProperties" = limits::MAX_RULE_LABELS, "additionalProperties" = {"type": "string", "maxLength": limits::MAX_DNS_LABEL}))]
    pub to: BTreeMap<String, String>,
    /// Ports the rule opens; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_RULE_PORTS))]
    pub ports: Vec<PortRule>,
}

/// A port and its protocol.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PortRule {
    /// TCP, UDP or SCTP.
    #[serde(default)]
    pub protocol: Protocol,
    /// Port number, 1 to 65535.
    #[schemars(range(min = 1, max = limits::MAX_PORT))]
    pub port: i32,
}

/// A transport protocol.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

/// Per-tenant Auth settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Admin user registered for this tenant; defaults to the operator's
    /// `--auth-admin-user-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_ADMIN_USER_ID))]
    pub admin_user_id: Option<String>,
}

/// Observed state, mirrored from the operator's journal and the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Current phase: Pending, ProvisioningRedis, ProvisioningServer, Running, Updating,
    /// Degraded, Stalled, Failed, Paused or Deleting. The journal is the source of truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The tenant namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Readiness of Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_status: Option<ComponentStatus>,
    /// Readiness of the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_status: Option<ComponentStatus>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled, following kstatus conventions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Position of the last transition in the operator's journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<JournalPosition>,
    /// The Redis backups, while `spec.redis.backup` is set: from the CronJob
    /// `redis-backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
}

/// The Redis backups as the CronJob reports them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// When the last backup that succeeded finished; unset until one has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the last backup was started, whatever came of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// Readiness of one component.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// Running, NotReady, Updating (rolling out a new template), Pending (not created
    /// yet), NotCreated (the tenant failed first) or Deleted.
    pub phase: String,
    /// What the operator sees, in words: replicas ready and, when a pod is not, the pod
    /// and Kubernetes' reason (image pull, crash loop, scheduling, ...).
    pub message: String,
    /// Replicas that are ready.
    pub ready_replicas: i32,
    /// Replicas the workload asks for.
    pub total_replicas: i32,
}

/// Where the last transition sits in the journal.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct JournalPosition {
    /// Sequence number of the tenant's last journaled transition (gapless from 1 in its
    /// chain); `neurallog-operator journal show NAME` lists them.
    pub sequence: u64,
    /// SHA-256 (hex) of that record, chained to the one before: what `journal verify`
    /// recomputes.
    pub hash: String,
    /// Set when the operator's journal was replaced after damage: which chain `sequence`
    /// counts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
}

fn one() -> i32 {
    1
}

fn yes() -> bool {
    true
}

fn default_server_image() -> String {
    DEFAULT_SERVER_IMAGE.to_string()
}

fn default_redis_image() -> String {
    DEFAULT_REDIS_IMAGE.to_string()
}

fn default_redis_storage() -> String {
    DEFAULT_REDIS_STORAGE.to_string()
}

impl Default for ServerSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            image: default_server_image(),
            resources: None,
            env: Vec::new(),
            autoscaling: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            topology_spread: Vec::new(),
        }
    }
}

impl Default for RedisSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            image: default_redis_image(),
            resources: None,
            storage: default_redis_storage(),
            config: BTreeMap::new(),
            storage_class_name: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            topology_spread: Vec::new(),
            retain_storage: false,
            backup: None,
        }
    }
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            allowed_namespaces: Vec::new(),
            ingress_rules: Vec::new(),
            egress_rules: Vec::new(),
        }
    }
}

/// The namespace a tenant's resources live in.
/// Why a tenant name has a length limit, as admission and validation say it.
pub fn name_length_message() -> String {
    format!(
        "metadata.name: a tenant name is at most {MAX_TENANT_NAME_LEN} characters, so that every \
         name derived from it fits in {DNS_LABEL_MAX}: the StatefulSet <name>{REDIS_SUFFIX} labels \
         its pods <name>{REDIS_SUFFIX}-<revision hash of up to 10 characters>"
    )
}

/// Why a tenant name has its form, as admission says it.
pub const NAME_FORM_MESSAGE: &str = "metadata.name: a tenant name must start with a lower-case \
     letter and hold only lower-case letters, digits and '-', ending with a letter or digit, \
     because it names the Services <name>-redis and <name>-server (DNS-1035 labels) and the \
     namespace tenant-<name>";

/// `['a', 'b']`: a CEL list of string literals (the items hold no quote or backslash).
fn cel_list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("'{item}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// `a, b and c`: items as a sentence lists them.
fn prose_list(items: &[&str]) -> String {
    match items.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => (*last).to_owned(),
        None => String::new(),
    }
}

pub fn namespace_for(tenant_name: &str) -> String {
    format!("tenant-{tenant_name}")
}

/// The CustomResourceDefinition of `Tenant`.
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = Tenant::crd();
    declare_metadata_name_and_default_spec(&mut crd);
    crd
}

/// The CRD as YAML, as `neurallog-operator crd` prints it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&crd())
}

/// Declares `metadata.name` in the schema (the one metadata field a CRD may constrain), so
/// the name rules report their errors on `metadata.name` instead of on the object; and
/// makes `spec` optional, defaulting to `{}`.
fn declare_metadata_name_and_default_spec(crd: &mut CustomResourceDefinition) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let name = JSONSchemaProps {
            type_: Some("string".into()),
            ..Default::default()
        };
        let metadata = JSONSchemaProps {
            type_: Some("object".into()),
            properties: Some([("name".to_string(), name)].into()),
            ..Default::default()
        };
        let properties = schema.properties.get_or_insert_with(Default::default);
        properties.insert("metadata".into(), metadata);
        // `spec: {}` (or no spec at all) is a tenant with every default.
        if let Some(spec) = properties.get_mut("spec") {
            spec.default = Some(
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                    serde_json::json!({}),
                ),
            );
        }
        if let Some(required) = schema.required.as_mut() {
            required.retain(|field| field != "spec");
        }
    }
}

#[cfg(test)]
mod tests;
