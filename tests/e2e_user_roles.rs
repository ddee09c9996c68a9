//! The roles for people (deploy/rbac/user_roles.yaml, journal_reader_role.yaml; the chart
//! renders the same, tests/e2e_helm.rs checks): each proven with a token of a
//! ServiceAccount bound to it, by real requests and the API server's answers (403 or not).
//! The viewer reads Tenants and writes nothing; the editor creates and changes them but
//! cannot delete; the admin deletes; none writes status. Bound to the built-in `view`,
//! `edit` and `admin` instead, the same rights arrive by aggregation. The journal reader
//! reaches the operator Service's proxy and nothing else.
//!
//! The ClusterRoles are deploy/'s under names prefixed with the run (their aggregation
//! labels kept), so this test runs beside e2e_deploy, which installs the real names.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/tools.rs"]
mod tools;

use common::*;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use neurallog_operator::crd::Tenant;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tools::documents;

const BASIC: &str = include_str!("../examples/basic-tenant.yaml");
const ROLES: [&str; 3] = [
    "neurallog-tenant-viewer",
    "neurallog-tenant-editor",
    "neurallog-tenant-admin",
];
const READER: &str = "neurallog-journal-reader";
/// The Service the journal reader may proxy to, as deploy/ names it.
const OPERATOR_SERVICE: &str = "neurallog-operator";

/// Who is bound to what: (ServiceAccount, ClusterRole; a role of [`ROLES`] is prefixed).
const BINDINGS: [(&str, &str); 6] = [
    ("viewer", "neurallog-tenant-viewer"),
    ("editor", "neurallog-tenant-editor"),
    ("admin", "neurallog-tenant-admin"),
    ("builtin-view", "view"),
    ("builtin-edit", "edit"),
    ("builtin-admin", "admin"),
];

fn deploy_objects(file: &str) -> Vec<Value> {
    let path = repo_root().join("deploy/rbac").join(file);
    documents(&std::fs::read_to_string(&path).expect("deploy/rbac file"))
}

/// Every object of the sandbox, deleted at the end even when the test fails.
struct Sandbox {
    namespace: String,
    objects: Vec<Value>,
}

impl Sandbox {
    fn create(run: &str) -> Sandbox {
        let ns = run.to_string();
        let mut objects =
            vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})];
        for mut role in deploy_objects("user_roles.yaml") {
            let name = role["metadata"]["name"]
                .as_str()
                .expect("a name")
                .to_string();
            assert!(ROLES.contains(&name.as_str()), "unexpected role {name}");
            role["metadata"]["name"] = json!(format!("{run}-{name}"));
            objects.push(role);
        }
        let mut reader = deploy_objects("journal_reader_role.yaml").remove(0);
        assert_eq!(reader["metadata"]["name"], READER);
        reader["metadata"]["namespace"] = json!(ns);
        objects.push(reader);
        // The Service the reader may proxy to, and one it may not; no pods behind them.
        for service in [OPERATOR_SERVICE, "other"] {
            objects.push(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service, "namespace": ns},
                "spec": {"selector": {"e2e.neurallog.io/nothing": run},
                         "ports": [{"name": "https", "port": 8080}]}}));
        }
        let mut accounts: Vec<&str> = BINDINGS.iter().map(|(sa, _)| *sa).collect();
        accounts.extend(["reader", "nobody"]);
        for account in accounts {
            objects.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": account, "namespace": ns}}));
        }
        for (account, role) in BINDINGS {
            let role = if ROLES.contains(&role) {
                format!("{run}-{role}")
            } else {
                role.to_string()
            };
            objects.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": format!("{run}-{account}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}]}));
        }
        objects.push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "reader", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": READER},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]}),
        );
        let sandbox = Sandbox {
            namespace: ns,
            objects,
        };
        let list = json!({"apiVersion": "v1", "kind": "List", "items": sandbox.objects});
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
        sandbox
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let cluster_scoped: Vec<Value> = self
            .objects
            .iter()
            .filter(|o| o["metadata"]["namespace"].is_null() && o["kind"] != "Namespace")
            .cloned()
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": cluster_scoped});
        let (ok, _, stderr) = kubectl_stdin(
            &["delete", "--ignore-not-found", "-f", "-"],
            &list.to_string(),
        );
        if !ok {
            eprintln!("cleanup: {stderr}");
        }
        let _ = delete_namespace(&self.namespace);
    }
}

/// A kubeconfig that authenticates as ServiceAccount `account` of the sandbox.
async fn token_kubeconfig_of(
    admin: &Client,
    sandbox: &Sandbox,
    account: &str,
    dir: &Path,
) -> PathBuf {
    let token = service_account_token(admin, &sandbox.namespace, account).await;
    token_kubeconfig(&token, &dir.join(format!("{account}.kubeconfig")))
}

/// A client that authenticates as ServiceAccount `account` of the sandbox.
async fn client_as(admin: &Client, sandbox: &Sandbox, account: &str, dir: &Path) -> Client {
    let path = token_kubeconfig_of(admin, sandbox, account, dir).await;
    let kubeconfig = kube::config::Kubeconfig::read_from(path).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(config).expect("client")
}

/// A GET of the journal API through the API server's proxy to `service`, as the
/// kubeconfig's user; returns kubectl's stderr (the API server's refusal or error).
fn proxy_get(kubeconfig: &Path, namespace: &str, service: &str) -> String {
    let output = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "get",
            "--raw",
            &format!(
                "/api/v1/namespaces/{namespace}/services/https:{service}:8080/proxy/journal/tenants"
            ),
        ])
        .output()
        .expect("kubectl runs");
    assert!(!output.status.success(), "no journal API answers here");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `Ok(())`, or the API server's status code.
fn code<T>(result: Result<T, kube::Error>) -> Result<(), u16> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.code),
        Err(other) => panic!("not an answer of the API server: {other}"),
    }
}

/// What one identity may do to Tenants, each answer checked against the API server.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rights {
    read: bool,
    create: bool,
    change: bool,
    delete: bool,
}

const NONE: Rights = Rights {
    read: false,
    create: false,
    change: false,
    delete: false,
};
const VIEW: Rights = Rights { read: true, ..NONE };
const EDIT: Rights = Rights {
    create: true,
    change: true,
    ..VIEW
};
const ADMIN: Rights = Rights {
    delete: true,
    ..EDIT
};

/// Tries everything on Tenants as `who` (a Tenant `existing` the admin made) and returns
/// what went through; a refusal must be a 403. Cleans up what it created.
async fn observed_rights(who: &Client, run: &str, account: &str, existing: &str) -> Rights {
    let tenants: Api<Tenant> = Api::all(who.clone());
    let allowed = |r: Result<(), u16>, what: &str| match r {
        Ok(()) => true,
        Err(403) => false,
        Err(code) => panic!("{account} {what}: HTTP {code}, not 403"),
    };
    let read = allowed(code(tenants.list(&ListParams::default()).await), "list")
        & allowed(code(tenants.get(existing).await), "get");
    let name = format!("{run}-by-{account}");
    let create = allowed(
        code(
            tenants
                .create(&PostParams::default(), &tenant_from_yaml(BASIC, &name, run))
                .await,
        ),
        "create",
    );
    let label = json!({"metadata": {"labels": {"e2e.neurallog.io/changed-by": account}}});
    let change = allowed(
        code(
            tenants
                .patch(existing, &PatchParams::default(), &Patch::Merge(&label))
                .await,
        ),
        "patch",
    );
    let status = json!({"status": {"phase": "Running"}});
    assert_eq!(
        code(
            tenants
                .patch_status(existing, &PatchParams::default(), &Patch::Merge(&status))
                .await
        ),
        Err(403),
        "{account} must not write a Tenant's status"
    );
    // Delete what it created, else a Tenant of the admin's own making.
    let victim = if create {
        name.clone()
    } else {
        let spare = format!("{run}-spare-{account}");
        admin_creates(run, &spare).await;
        spare
    };
    let delete = allowed(
        code(tenants.delete(&victim, &DeleteParams::default()).await),
        "delete",
    );
    Rights {
        read,
        create,
        change,
        delete,
    }
}

async fn admin_creates(run: &str, name: &str) {
    let tenants: Api<Tenant> = Api::all(client().await);
    tenants
        .create(&PostParams::default(), &tenant_from_yaml(BASIC, name, run))
        .await
        .expect("the cluster admin creates a Tenant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_for_people_grants_what_it_says_and_no_more() {
    let admin = client().await;
    install_crd(&admin).await;
    let run = unique("roles");
    let sandbox = Sandbox::create(&run);
    // No operator serves this run's label: the Tenants are plain objects here, deleted
    // at once (no finalizer). Any left over go at the end.
    let mut leftovers = vec![format!("{run}-existing")];
    for (account, _) in BINDINGS
        .iter()
        .chain([("nobody", ""), ("reader", "")].iter())
    {
        leftovers.push(format!("{run}-by-{account}"));
        leftovers.push(format!("{run}-spare-{account}"));
    }
    let _cleanup = TenantCleanup(leftovers);
    let existing = format!("{run}-existing");
    admin_creates(&run, &existing).await;
    let dir = tempfile::tempdir().expect("temp dir");

    // Aggregation is asynchronous: wait until the built-in view carries the viewer's rules.
    let builtin_view = client_as(&admin, &sandbox, "builtin-view", dir.path()).await;
    wait_for(
        "the built-in view to aggregate neurallog-tenant-viewer",
        Duration::from_secs(60),
        || {
            let tenants: Api<Tenant> = Api::all(builtin_view.clone());
            async move { tenants.list(&ListParams::default()).await.ok().map(|_| ()) }
        },
    )
    .await;

    let expected = [
        ("viewer", VIEW),
        ("editor", EDIT),
        ("admin", ADMIN),
        ("builtin-view", VIEW),
        ("builtin-edit", EDIT),
        ("builtin-admin", ADMIN),
        ("reader", NONE),
        ("nobody", NONE),
    ];
    for (account, rights) in expected {
        let who = client_as(&admin, &sandbox, account, dir.path()).await;
        assert_eq!(
            observed_rights(&who, &run, account, &existing).await,
            rights,
            "{account}'s rights on Tenants"
        );
    }

    // The journal reader reaches the operator Service's proxy (no pod answers behind it
    // here: the proxy's 503, after authorization) and no other Service's; a viewer reaches
    // neither. kubectl, not the kube client: the client retries 503s with backoff.
    let reader = token_kubeconfig_of(&admin, &sandbox, "reader", dir.path()).await;
    let viewer = token_kubeconfig_of(&admin, &sandbox, "viewer", dir.path()).await;
    let through = proxy_get(&reader, &sandbox.namespace, OPERATOR_SERVICE);
    assert!(
        through.contains("ServiceUnavailable") && through.contains("no endpoints available"),
        "the journal reader is let through to the proxy: {through}"
    );
    for (who, service) in [(&reader, "other"), (&viewer, OPERATOR_SERVICE)] {
        let refused = proxy_get(who, &sandbox.namespace, service);
        assert!(
            refused.contains("Forbidden") && refused.contains("services/proxy"),
            "{} must not proxy to {service}: {refused}",
            who.display()
        );
    }
}
