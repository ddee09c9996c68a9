//! The bad-input corpus (tests/bad-input/*.yaml): each manifest is either refused by the
//! API server with a message naming the field, or accepted and then `Failed` with a
//! `Stalled` condition naming it. The operator never panics or restarts meanwhile.

// Tests and benches may unwrap (clippy.toml covers only `#[test]` functions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kube::Api;
use neurallog_operator::crd::Tenant;
use std::path::PathBuf;
use std::time::Duration;

struct Case {
    file: PathBuf,
    expect: String,
    field: String,
    yaml: String,
}

fn corpus() -> Vec<Case> {
    let dir = repo_root().join("tests/bad-input");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/bad-input exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let yaml = std::fs::read_to_string(&file).expect("readable");
            let header = yaml.lines().next().unwrap_or_default();
            let mut words = header.trim_start_matches("# expect:").split_whitespace();
            let expect = words.next().expect("expectation").to_string();
            let field = words.next().expect("field").to_string();
            Case {
                file,
                expect,
                field,
                yaml,
            }
        })
        .collect()
}

/// The manifest renamed and labelled for this run, so only this test's operator sees it.
/// Written as JSON: serde_yaml writes the string "yes" bare, which kubectl's YAML 1.1
/// reader would turn into a boolean.
fn for_run(yaml: &str, name: &str, run: &str) -> String {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(yaml).expect("YAML");
    doc["metadata"]["name"] = name.into();
    doc["metadata"]["labels"][RUN_LABEL] = run.into();
    serde_json::to_string(&doc).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_manifest_is_refused_or_stalled_with_its_field_named() {
    let cases = corpus();
    assert!(
        cases.len() >= 40,
        "the corpus has {} manifests",
        cases.len()
    );
    let client = client().await;
    install_crd(&client).await;
    let run = unique("bad");
    let auth = auth_stub().await;
    let mut operator = Operator::start(&run, &auth.url());
    operator.wait_ready().await;
    let tenants: Api<Tenant> = Api::all(client.clone());

    let (mut rejected, mut stalled) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let label = case
            .file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        match case.expect.as_str() {
            "rejected" => {
                let (ok, _, stderr) = kubectl_stdin(&["apply", "-f", "-"], &case.yaml);
                assert!(!ok, "{label}: the API server accepted it");
                assert!(
                    stderr.contains(&case.field),
                    "{label}: the refusal does not name {}: {stderr}",
                    case.field
                );
                rejected += 1;
            }
            "stalled" => {
                let name = format!("{run}-{i}");
                let (ok, _, stderr) =
                    kubectl_stdin(&["apply", "-f", "-"], &for_run(&case.yaml, &name, &run));
                assert!(
                    ok,
                    "{label}: refused at admission, expected the operator to report it: {stderr}"
                );
                let failed =
                    wait_for_phase(&client, &name, "Failed", Duration::from_secs(60)).await;
                let status = failed.status.expect("status");
                let condition = status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Stalled")
                    .expect("Stalled condition");
                assert_eq!(condition.status, "True", "{label}");
                assert!(
                    condition.message.contains(&case.field),
                    "{label}: {} not named in {:?}",
                    case.field,
                    condition.message
                );
                stalled += 1;
            }
            other => panic!("{label}: unknown expectation {other:?}"),
        }
        assert!(
            operator.is_alive(),
            "the operator exited while handling {label}"
        );
    }
    let log = std::fs::read_to_string(&operator.log).unwrap_or_default();
    assert!(!log.contains("panicked"), "the operator panicked:\n{log}");
    println!(
        "bad input: {} manifests, {rejected} refused by the API server, {stalled} stalled by the operator, 0 panics, 0 restarts",
        cases.len()
    );

    for i in 0..cases.len() {
        let name = format!("{run}-{i}");
        if tenants.get_opt(&name).await.expect("readable").is_some() {
            kubectl(&["delete", "tenant", &name, "--wait=false"]);
            wait_until_gone(&tenants, &name, Duration::from_secs(120)).await;
        }
    }
}
