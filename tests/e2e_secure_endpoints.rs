//! The operator's secure endpoints against the real API server: an operator on loopback
//! with `--secure-endpoints=true` serves TLS only, and `/metrics` and the journal API only
//! to a ServiceAccount token the API server authenticates (TokenReview) and whose account
//! deploy/rbac/endpoint_roles.yaml's roles allow the path (SubjectAccessReview): no token
//! 401, an unknown token 401, a token without the role 403, with it 200. `/healthz` and
//! `/readyz` stay open. `kubectl tenant history` reads the journal with an auditor's token
//! and is refused, saying which role is missing, with another's.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const ROLES: [&str; 2] = ["neurallog-metrics-reader", "neurallog-journal-auditor"];

fn endpoint_roles() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("deploy/rbac/endpoint_roles.yaml"))
        .expect("deploy/rbac/endpoint_roles.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

/// A namespace with ServiceAccounts `scraper` (bound to a copy of the metrics reader role),
/// `auditor` (the journal auditor role) and `nobody`, the roles as deploy/ ships them.
struct Sandbox {
    namespace: String,
    cluster_scoped: Vec<String>,
}

impl Sandbox {
    fn create(run: &str) -> Sandbox {
        let mut objects =
            vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": run}})];
        let mut cluster_scoped = Vec::new();
        for mut role in endpoint_roles() {
            let name = role["metadata"]["name"]
                .as_str()
                .expect("a name")
                .to_string();
            assert!(ROLES.contains(&name.as_str()), "unexpected role {name}");
            role["metadata"]["name"] = json!(format!("{run}-{name}"));
            cluster_scoped.push(format!("clusterrole/{run}-{name}"));
            objects.push(role);
        }
        for (account, role) in [
            ("scraper", Some("neurallog-metrics-reader")),
            ("auditor", Some("neurallog-journal-auditor")),
            ("nobody", None),
        ] {
            objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": run}}));
            if let Some(role) = role {
                objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": format!("{run}-{account}")},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("{run}-{role}")},
                    "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": run}]}));
                cluster_scoped.push(format!("clusterrolebinding/{run}-{account}"));
            }
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let (ok, _, stderr) = kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--field-manager=neurallog-e2e",
                "-f",
                "-",
            ],
            &list.to_string(),
        );
        assert!(ok, "the sandbox applies: {stderr}");
        Sandbox {
            namespace: run.to_string(),
            cluster_scoped,
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let mut args = vec!["delete", "--ignore-not-found", "--wait=false"];
        args.extend(self.cluster_scoped.iter().map(String::as_str));
        let (ok, _, stderr) = kubectl_stdin(&args, "");
        if !ok {
            eprintln!("cleanup: {stderr}");
        }
        let _ = delete_namespace(&self.namespace);
    }
}

/// GET `path` with `token` (if any): (status, body).
async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut request = loopback_http().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the operator answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// `kubectl tenant ARGS` by kubectl: (success, stdout, stderr).
fn kubectl_tenant_outcome(args: &[&str]) -> (bool, String, String) {
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-tenant"));
    let dir = plugin.parent().expect("the plugin's directory");
    let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let output = Command::new(kubectl_path())
        .arg("tenant")
        .args(args)
        .env("PATH", path)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("kubectl runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_the_journal_answer_only_callers_the_api_server_authorizes() {
    skip_without_cluster();
    let client = client().await;
    install_crd(&client).await;
    let run = unique("secure");
    let sandbox = Sandbox::create(&run);
    let stub = auth_stub().await;
    let options = OperatorOptions {
        args: vec!["--secure-endpoints=true".into()],
        ..OperatorOptions::default()
    };
    let operator = Operator::start_with_options(&run, &stub.url(), &options);
    let base = operator.metrics_url.clone();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    // /readyz answers without a token: the kubelet's probes need none.
    operator.wait_ready().await;
    let (status, _) = get(&base, "/healthz", None).await;
    assert_eq!(status, 200, "/healthz stays open");

    let name = format!("{run}-t");
    let _cleanup = TenantCleanup(vec![name.clone()]);
    apply_tenant(&client, &tenant_from_yaml(BASIC, &name, &run)).await;

    let token = |account: &'static str| {
        let client = client.clone();
        let namespace = sandbox.namespace.clone();
        async move { service_account_token(&client, &namespace, account).await }
    };
    let (scraper, auditor, nobody) = (
        token("scraper").await,
        token("auditor").await,
        token("nobody").await,
    );

    // The auditor reads the journal once the tenant's first transition is in it.
    let history_path = format!("/journal/tenants/{name}");
    let history = wait_for("the tenant in the journal", Duration::from_secs(60), || {
        let (base, path, auditor) = (base.clone(), history_path.clone(), auditor.clone());
        async move {
            let (status, body) = get(&base, &path, Some(&auditor)).await;
            (status == 200).then_some(body)
        }
    })
    .await;
    assert!(history.contains(&name), "{history}");

    let cases: [(&str, Option<&str>, u16, &str); 9] = [
        ("/metrics", None, 401, "bearer token is required"),
        ("/metrics", Some("not-a-token"), 401, "did not authenticate"),
        ("/metrics", Some(&nobody), 403, "neurallog-metrics-reader"),
        ("/metrics", Some(&auditor), 403, "neurallog-metrics-reader"),
        ("/metrics", Some(&scraper), 200, "neurallog_leader"),
        ("/journal/tenants", None, 401, "bearer token is required"),
        (
            "/journal/tenants",
            Some(&nobody),
            403,
            "neurallog-journal-auditor",
        ),
        (
            "/journal/verify",
            Some(&scraper),
            403,
            "neurallog-journal-auditor",
        ),
        ("/journal/tenants", Some(&auditor), 200, &name),
    ];
    for (path, token, expected, says) in cases {
        let (status, body) = get(&base, path, token).await;
        assert_eq!(
            status,
            expected,
            "{path} with {}: {body}",
            token.map_or("no token", |_| "a token")
        );
        assert!(body.contains(says), "{path}: {body}");
    }
    let (status, body) = get(&base, "/journal/tenants", Some(&nobody)).await;
    assert!(
        status == 403 && body.contains(&format!("system:serviceaccount:{run}:nobody")),
        "the refusal names the user: {body}"
    );

    // TLS only: plain HTTP on the same port gets no answer.
    let plain = base.replacen("https://", "http://", 1);
    let answered = reqwest::get(format!("{plain}/metrics")).await;
    assert!(
        answered.is_err() || !answered.unwrap().status().is_success(),
        "plain HTTP must not be served"
    );

    // kubectl tenant with the auditor's token reads the history; with another's, refused.
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = |account: &str, token: &str| {
        let path = dir.path().join(account);
        std::fs::write(&path, token).expect("token file");
        path.display().to_string()
    };
    let (auditor_file, nobody_file) = (
        token_file("auditor", &auditor),
        token_file("nobody", &nobody),
    );
    let plugin = |file: &str| {
        kubectl_tenant_outcome(&[
            "history",
            &name,
            "--server",
            &base,
            "--insecure-skip-tls-verify",
            "--token-file",
            file,
        ])
    };
    let (ok, table, stderr) = plugin(&auditor_file);
    assert!(
        ok && table.contains(&format!("tenant {name} uid")) && table.contains(" -> "),
        "the auditor reads: {table}{stderr}"
    );
    let (ok, _, refused) = plugin(&nobody_file);
    assert!(
        !ok && refused.contains("403")
            && refused.contains("may not get /journal/tenants/")
            && refused.contains("neurallog-journal-auditor"),
        "the refusal says what is missing: {refused}"
    );
    let (ok, _, refused) = kubectl_tenant_outcome(&[
        "history",
        &name,
        "--server",
        &base,
        "--insecure-skip-tls-verify",
    ]);
    assert!(
        !ok && refused.contains("401") && refused.contains("--token-file"),
        "without a token the plugin says how to give one: {refused}"
    );
    drop(operator);
}

/// The operator's own ClusterRole (deploy/) lets it review tokens and access.
#[test]
fn the_operator_cluster_role_allows_token_and_access_reviews() {
    let text = std::fs::read_to_string(repo_root().join("deploy/rbac/cluster_role.yaml"))
        .expect("cluster_role.yaml");
    let role: Value = serde_yaml::from_str(&text).expect("YAML");
    let allows = |group: &str, resource: &str| {
        role["rules"].as_array().expect("rules").iter().any(|rule| {
            rule["apiGroups"]
                .as_array()
                .is_some_and(|g| g.contains(&json!(group)))
                && rule["resources"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!(resource)))
                && rule["verbs"]
                    .as_array()
                    .is_some_and(|v| v.contains(&json!("create")))
        })
    };
    assert!(allows("authentication.k8s.io", "tokenreviews"));
    assert!(allows("authorization.k8s.io", "subjectaccessreviews"));
}
