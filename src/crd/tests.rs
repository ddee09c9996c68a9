use super::*;

fn parse(yaml: &str) -> Tenant {
    serde_yaml::from_str(yaml).expect("valid Tenant YAML")
}

#[test]
fn the_committed_crd_matches_the_code() {
    let committed = include_str!("../../deploy/crd/tenants.neurallog.io.yaml");
    let generated = crd_yaml().expect("CRD serializes");
    assert!(
        committed == generated,
        "deploy/crd/tenants.neurallog.io.yaml is stale: run `make crd` and commit it"
    );
}

#[test]
fn the_charts_crd_is_the_committed_one() {
    let chart = include_str!("../../charts/neurallog-operator/crds/tenants.neurallog.io.yaml");
    let committed = include_str!("../../deploy/crd/tenants.neurallog.io.yaml");
    assert!(
        chart == committed,
        "charts/neurallog-operator/crds/tenants.neurallog.io.yaml is stale: run `make crd` and commit it"
    );
}

#[test]
fn the_reserved_lists_in_cel_are_the_constants() {
    let yaml = crd_yaml().expect("CRD serializes");
    for name in OPERATOR_ENV.iter().chain(&RESERVED_REDIS_KEYS) {
        assert!(
            yaml.contains(&format!("'{name}'")),
            "{name} is not in a CEL rule"
        );
    }
    assert_eq!(
        RESERVED_REDIS_KEYS[..MANAGED_REDIS_KEYS.len()],
        MANAGED_REDIS_KEYS
    );
    assert_eq!(
        RESERVED_REDIS_KEYS[MANAGED_REDIS_KEYS.len()..],
        SECRET_REDIS_KEYS
    );
    assert_eq!(prose_list(&["a", "b", "c"]), "a, b and c");
    assert_eq!(prose_list(&["a"]), "a");
    assert_eq!(cel_list(&["a", "b"]), "['a', 'b']");
}

#[test]
fn the_guides_basic_tenant_gets_the_guides_defaults() {
    let tenant = parse(include_str!("../../examples/basic-tenant.yaml"));
    let spec = &tenant.spec;
    assert_eq!(spec.display_name.as_deref(), Some("My Tenant"));
    assert_eq!(spec.server.replicas, 1);
    assert_eq!(spec.server.image, "neurallog/server:latest");
    assert_eq!(spec.redis.replicas, 1);
    assert_eq!(spec.redis.image, "redis:7-alpine");
    assert_eq!(spec.redis.storage, "1Gi");
    assert!(spec.network_policy.enabled);
    assert!(spec.network_policy.allowed_namespaces.is_empty());
}

#[test]
fn the_guides_customized_tenant_parses_every_field() {
    let tenant = parse(include_str!("../../examples/customized-tenant.yaml"));
    let spec = &tenant.spec;
    assert_eq!(spec.server.replicas, 2);
    let cpu = spec.server.resources.as_ref().and_then(|r| r.cpu.as_ref());
    assert_eq!(
        cpu.and_then(|c| c.limit.as_ref()).map(|q| q.as_str()),
        Some("500m")
    );
    assert_eq!(spec.server.env[0].name, "LOG_LEVEL");
    assert_eq!(spec.redis.storage, "5Gi");
    assert_eq!(spec.redis.config["maxmemory-policy"], "allkeys-lru");
    assert_eq!(
        spec.network_policy.allowed_namespaces,
        ["default", "monitoring"]
    );
}

#[test]
fn quantities_may_be_numbers_or_strings() {
    let tenant = parse(
        "apiVersion: neurallog.io/v1\nkind: Tenant\nmetadata: {name: q}\nspec:\n  server:\n    resources: {cpu: {request: 1, limit: 1.5}, memory: {limit: 1Gi}}\n",
    );
    let cpu = tenant
        .spec
        .server
        .resources
        .and_then(|r| r.cpu)
        .expect("cpu");
    assert_eq!(cpu.request, Some(QuantityValue::from("1")));
    assert_eq!(cpu.limit, Some(QuantityValue::from("1.5")));
}

#[test]
fn printer_columns_are_the_guides() {
    let crd = crd();
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(columns, ["DISPLAY NAME", "NAMESPACE", "PHASE", "AGE"]);
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.metadata.name.as_deref(), Some("tenants.neurallog.io"));
}

#[test]
fn the_namespace_is_tenant_dash_name() {
    assert_eq!(namespace_for("my-tenant"), "tenant-my-tenant");
    let longest = "a".repeat(MAX_TENANT_NAME_LEN);
    assert!(namespace_for(&longest).len() <= 63);
}

/// Every property of `node` (walking into properties, array items, map values and
/// `anyOf` branches) without a description, by path.
fn undescribed(node: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        let child_path = format!("{path}.{name}");
        let described = child["description"]
            .as_str()
            .is_some_and(|d| !d.trim().is_empty());
        if !described {
            missing.push(child_path.clone());
        }
        undescribed(child, &child_path, missing);
    }
    if node["items"].is_object() {
        undescribed(&node["items"], &format!("{path}[]"), missing);
    }
    if node["additionalProperties"].is_object() {
        undescribed(
            &node["additionalProperties"],
            &format!("{path}{{}}"),
            missing,
        );
    }
    for branch in node["anyOf"].as_array().into_iter().flatten() {
        undescribed(branch, path, missing);
    }
}

/// `kubectl explain tenant.<field>` prints the schema's description of the field: every
/// field of spec and status has one. `metadata` is the exception: the API server publishes
/// the standard ObjectMeta (with its own documentation) in its place, and a CRD may not
/// describe it (only `metadata.name` and `generateName` may be constrained there).
#[test]
fn kubectl_explain_describes_every_field() {
    let crd = serde_json::to_value(crd()).expect("CRD serializes");
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    assert!(!versions.is_empty());
    for version in versions {
        let mut schema = version["schema"]["openAPIV3Schema"].clone();
        assert!(
            schema["properties"]["spec"].is_object() && schema["properties"]["status"].is_object()
        );
        schema["properties"]
            .as_object_mut()
            .expect("properties")
            .remove("metadata");
        let mut missing = Vec::new();
        undescribed(&schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description (a `///` comment on the field in src/crd.rs), \
             shown empty by kubectl explain: {missing:?}"
        );
    }
}

#[test]
fn the_description_walk_finds_an_undescribed_field() {
    let schema = serde_json::json!({"properties": {
        "spec": {"description": "d", "properties": {
            "list": {"description": "d", "items": {"properties": {"bare": {"type": "string"}}}},
            "map": {"description": "d", "additionalProperties": {"properties": {"also": {"type": "string", "description": " "}}}},
        }},
    }});
    let mut missing = Vec::new();
    undescribed(&schema, "", &mut missing);
    assert_eq!(missing, [".spec.list[].bare", ".spec.map{}.also"]);
}
