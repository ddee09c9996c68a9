use super::*;
use crate::render::test_support::customized;
use crate::render::{Desired, RenderSettings};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// What the API server adds to an object: identity, and one managed-fields entry per
/// manager, each a tree of the fields it owns.
fn as_served<K: Serialize>(object: &K, managed_fields: Value) -> Value {
    let mut value = serde_json::to_value(object).unwrap();
    let metadata = value["metadata"].as_object_mut().unwrap();
    metadata.insert("uid".into(), json!("5f1c0ad4-0000-4000-8000-000000000001"));
    metadata.insert("resourceVersion".into(), json!("4711"));
    metadata.insert("managedFields".into(), managed_fields);
    value
}

fn managed_fields() -> Value {
    json!([{
        "manager": "neurallog-operator",
        "operation": "Apply",
        "apiVersion": "v1",
        "time": "2026-12-02T07:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {".": {}}}
    }, {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "v1",
        "time": "2026-12-02T07:00:01Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:replicas": {}}},
        "subresource": "status"
    }])
}

/// `text` decoded as `K`, then stripped of its managed fields: what the caches kept before.
fn decoded_then_stripped<K: Resource + DeserializeOwned>(text: &str) -> K {
    let mut object: K = serde_json::from_str(text).unwrap();
    object.meta_mut().managed_fields = None;
    object
}

fn assert_lean_decodes_as_stripped<K>(object: &K)
where
    K: Resource + Serialize + DeserializeOwned + PartialEq + fmt::Debug,
{
    let text = as_served(object, managed_fields()).to_string();
    let lean: Lean<K> = serde_json::from_str(&text).unwrap();
    let stripped: K = decoded_then_stripped(&text);
    assert!(
        stripped.meta().uid.is_some(),
        "the served object has its identity"
    );
    assert_eq!(lean.into_inner(), stripped);
    // From bytes too (watch events are decoded from slices, responses from strings).
    let lean: Lean<K> = serde_json::from_slice(text.as_bytes()).unwrap();
    assert_eq!(lean.into_inner(), stripped);
}

#[test]
fn every_kind_the_operator_renders_decodes_as_if_stripped_after_decoding() {
    let mut tenant = customized();
    let autoscaling =
        json!({"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80});
    tenant.spec.server.autoscaling = Some(serde_json::from_value(autoscaling).unwrap());
    let backup = json!({"schedule": "0 3 * * *", "storage": "2Gi"});
    tenant.spec.redis.backup = Some(serde_json::from_value(backup).unwrap());
    let desired = Desired::render(&tenant, &RenderSettings::default()).unwrap();
    assert_lean_decodes_as_stripped(&desired.namespace);
    assert_lean_decodes_as_stripped(&desired.limit_range);
    assert_lean_decodes_as_stripped(&desired.resource_quota);
    for policy in &desired.network_policies {
        assert_lean_decodes_as_stripped(policy);
    }
    assert_lean_decodes_as_stripped(&desired.redis_config_map);
    assert_lean_decodes_as_stripped(&desired.redis_service);
    assert_lean_decodes_as_stripped(&desired.redis_statefulset);
    assert_lean_decodes_as_stripped(&desired.server_service);
    assert_lean_decodes_as_stripped(&desired.server_deployment);
    assert_lean_decodes_as_stripped(desired.server_disruption_budget.as_ref().unwrap());
    assert_lean_decodes_as_stripped(desired.server_autoscaler.as_ref().unwrap());
    assert_lean_decodes_as_stripped(desired.backup_cronjob.as_ref().unwrap());
    assert_lean_decodes_as_stripped(desired.backup_claim.as_ref().unwrap());
    assert_lean_decodes_as_stripped(&tenant);
}

#[test]
fn a_field_named_like_an_omitted_one_elsewhere_is_kept() {
    let text = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "managedFields": "not metadata: an unknown field, ignored as before",
        "metadata": {
            "name": "redis",
            "labels": {"managedFields": "a label"},
            "annotations": {"managedFields": "an annotation"},
            "managedFields": managed_fields(),
        },
        "data": {"managedFields": "data"},
    })
    .to_string();
    let lean: ConfigMap = serde_json::from_str::<Lean<ConfigMap>>(&text)
        .unwrap()
        .into_inner();
    assert_eq!(lean, decoded_then_stripped::<ConfigMap>(&text));
    assert_eq!(lean.metadata.labels.unwrap()["managedFields"], "a label");
    assert_eq!(lean.data.unwrap()["managedFields"], "data");
}

#[test]
fn an_escaped_key_is_read_as_the_name_it_spells() {
    // `\u0046` is "F": the parser cannot lend this key, it unescapes it into a buffer.
    let text = r#"{"apiVersion":"v1","kind":"ConfigMap",
        "met\u0061data":{"name":"x","managed\u0046ields":[{"fieldsV1":{"f:data":{}}}],
        "n\u0061mespace":"tenant-a"},"data":{"k":"v"}}"#;
    let lean = serde_json::from_str::<Lean<ConfigMap>>(text)
        .unwrap()
        .into_inner();
    assert_eq!(lean.metadata.managed_fields, None);
    assert_eq!(lean.metadata.namespace.as_deref(), Some("tenant-a"));
    assert_eq!(lean, decoded_then_stripped::<ConfigMap>(text));
}

#[test]
fn bad_input_is_still_an_error_naming_what_is_wrong() {
    let wrong_type = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":7}}"#;
    let lean = serde_json::from_str::<Lean<ConfigMap>>(wrong_type).unwrap_err();
    let plain = serde_json::from_str::<ConfigMap>(wrong_type).unwrap_err();
    assert_eq!(lean.to_string(), plain.to_string());
    // A malformed omitted value is still malformed JSON, though it is not decoded.
    let broken = r#"{"metadata":{"managedFields":[{"fieldsV1":{]}}}"#;
    assert!(serde_json::from_str::<Lean<ConfigMap>>(broken).is_err());
    let not_an_object = r#"["metadata"]"#;
    let lean = serde_json::from_str::<Lean<ConfigMap>>(not_an_object).unwrap_err();
    let plain = serde_json::from_str::<ConfigMap>(not_an_object).unwrap_err();
    assert_eq!(lean.to_string(), plain.to_string());
}

/// A pod as the pod cache keeps it: no spec, no annotations, no managed fields.
struct PodSummary;

impl Omitted for PodSummary {
    const FIELDS: &'static [&'static str] = &["spec"];
    const METADATA: &'static [&'static str] = &["managedFields", "annotations"];
}

#[test]
fn omitted_top_level_and_metadata_fields_are_not_decoded() {
    let text = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "redis-0", "annotations": {"a": "b"}, "labels": {"c": "d"},
                     "managedFields": managed_fields()},
        "spec": {"containers": [{"name": "redis", "image": "redis:7"}]},
        "status": {"phase": "Pending"},
    })
    .to_string();
    let pod = serde_json::from_str::<Lean<Pod, PodSummary>>(&text)
        .unwrap()
        .into_inner();
    let mut expected: Pod = serde_json::from_str(&text).unwrap();
    expected.spec = None;
    expected.metadata.annotations = None;
    expected.metadata.managed_fields = None;
    assert_eq!(pod, expected);
}

#[test]
fn watch_events_and_lists_decode_lean_objects() {
    let object = as_served(&customized(), managed_fields());
    let event = json!({"type": "MODIFIED", "object": object}).to_string();
    let kube::core::WatchEvent::Modified(lean) =
        serde_json::from_str::<kube::core::WatchEvent<Lean<crate::crd::Tenant>>>(&event).unwrap()
    else {
        panic!("a MODIFIED event");
    };
    let tenant = lean.into_inner();
    assert_eq!(tenant.metadata.managed_fields, None);
    assert_eq!(tenant.spec, customized().spec);
    let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "9"},
                      "items": [object.clone(), object]})
    .to_string();
    let list: kube::core::ObjectList<Lean<crate::crd::Tenant>> =
        serde_json::from_str(&list).unwrap();
    assert_eq!(list.items.len(), 2);
    let mut tenants = list.items.into_iter().map(Lean::into_inner);
    assert!(tenants.all(|t| t.metadata.managed_fields.is_none()));
}

#[test]
fn requests_go_to_the_kind_it_wraps() {
    use kube::Resource as _;
    assert_eq!(
        Lean::<ConfigMap>::url_path(&(), Some("tenant-a")),
        ConfigMap::url_path(&(), Some("tenant-a"))
    );
    assert_eq!(Lean::<ConfigMap>::kind(&()), "ConfigMap");
    let map = ConfigMap {
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..ConfigMap::default()
    };
    assert_eq!(
        serde_json::to_value(Lean::<ConfigMap>::new(map.clone())).unwrap(),
        serde_json::to_value(map).unwrap()
    );
}

proptest! {
    /// Wherever the omitted field and `metadata` sit among their siblings, and whatever the
    /// managed fields hold, the lean object is the stripped one.
    #[test]
    fn the_order_of_keys_and_the_managed_fields_do_not_matter(
        metadata_at in 0usize..4,
        managed_at in 0usize..4,
        tree in any_json(),
    ) {
        let mut metadata = vec![
            ("name", json!("redis").to_string()),
            ("namespace", json!("tenant-a").to_string()),
            ("labels", json!({"app": "redis"}).to_string()),
        ];
        let managed = json!([{"fieldsV1": tree}]).to_string();
        metadata.insert(managed_at.min(metadata.len()), ("managedFields", managed));
        let mut top = vec![
            ("apiVersion", json!("v1").to_string()),
            ("kind", json!("ConfigMap").to_string()),
            ("data", json!({"redis.conf": "maxmemory 64mb"}).to_string()),
        ];
        top.insert(metadata_at.min(top.len()), ("metadata", ordered(&metadata)));
        let text = ordered(&top);
        let lean = serde_json::from_str::<Lean<ConfigMap>>(&text).unwrap().into_inner();
        prop_assert_eq!(lean, decoded_then_stripped::<ConfigMap>(&text));
    }
}

/// A JSON object's text with its keys in the given order (`serde_json::Value` sorts them);
/// the values are JSON texts.
fn ordered(entries: &[(&str, String)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(key, value)| format!("{}:{value}", Value::from(*key)))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z:.\\\\\"]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("f:[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
