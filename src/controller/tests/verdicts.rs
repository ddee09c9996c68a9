//! `Context::is_current`: the verdict on a cached object is reused exactly while the
//! object's version and the desired state stay the same.

use super::fixtures::*;
use crate::controller::verdicts::render_inputs;
use crate::render;
use k8s_openapi::api::apps::v1::StatefulSet;

fn stored(desired: &StatefulSet, version: &str) -> StatefulSet {
    let mut object: serde_json::Value = crate::controller::verdicts::Rendered::of(desired)
        .expect("serializes")
        .annotated();
    object["metadata"]["resourceVersion"] = version.into();
    serde_json::from_value(object).expect("a StatefulSet")
}

#[tokio::test]
async fn a_verdict_is_reused_for_the_same_version_and_redone_for_a_new_one() {
    let fx = Fixture::new(tenant()).await;
    let tenant = fx.api.tenant();
    let inputs = render_inputs(&tenant);
    let desired = render::redis_statefulset(&tenant).expect("renders");
    let current = stored(&desired, "10");
    assert!(
        fx.ctx
            .is_current_object(&tenant, &inputs, &desired, &current)
            .expect("judged")
    );

    // The same version, changed: impossible (the API server gives every change a new
    // version), and not looked at again, which shows that the verdict was reused.
    let mut scaled = current.clone();
    scaled.spec.as_mut().expect("a spec").replicas = Some(3);
    assert!(
        fx.ctx
            .is_current_object(&tenant, &inputs, &desired, &scaled)
            .expect("judged")
    );

    // Someone scales it to 3: a new version, judged again.
    scaled.metadata.resource_version = Some("11".into());
    assert!(
        !fx.ctx
            .is_current_object(&tenant, &inputs, &desired, &scaled)
            .expect("judged")
    );
}

#[tokio::test]
async fn a_new_spec_is_judged_against_its_own_desired_state() {
    let fx = Fixture::new(tenant()).await;
    let tenant = fx.api.tenant();
    let desired = render::redis_statefulset(&tenant).expect("renders");
    let cached = stored(&desired, "10");
    assert!(
        fx.ctx
            .is_current_object(&tenant, &render_inputs(&tenant), &desired, &cached)
            .expect("judged")
    );

    let mut grown = tenant.clone();
    grown.spec.redis.storage = "5Gi".into();
    let grown_desired = render::redis_statefulset(&grown).expect("renders");
    assert!(
        !fx.ctx
            .is_current_object(&grown, &render_inputs(&grown), &grown_desired, &cached)
            .expect("judged"),
        "the cached object, at the version judged current before, against the new spec"
    );
}

#[tokio::test]
async fn a_known_verdict_needs_only_the_version_and_a_vanished_object_is_not_current() {
    let fx = Fixture::new(tenant()).await;
    let tenant = fx.api.tenant();
    let inputs = render_inputs(&tenant);
    let desired = render::redis_statefulset(&tenant).expect("renders");
    let current = serde_json::to_value(stored(&desired, "10")).expect("encodes");
    let mut asked = 0;
    let mut judge = |version: &str| {
        fx.ctx
            .is_current(&tenant, &inputs, &desired, Some(version), || {
                asked += 1;
                Some(current.clone())
            })
            .expect("judged")
    };
    assert!(judge("10"));
    assert!(judge("10"));
    assert_eq!(asked, 1, "the second verdict came from the version alone");

    let gone = fx
        .ctx
        .is_current(&tenant, &inputs, &desired, Some("12"), || None)
        .expect("judged");
    assert!(
        !gone,
        "an object gone from the cache meanwhile is written again"
    );
}
