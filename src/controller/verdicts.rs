//! "Is this cached object what the operator would apply?", answered once per object
//! version.
//!
//! A pass used to serialise every desired object to hash it, and every cached object to
//! compare it (see `compare`), although between two passes of a tenant almost nothing
//! changes. Rendering is a pure function of the Tenant without its status (and of the
//! operator's settings, fixed for the process), so the desired hashes are kept per digest
//! of those inputs; and an object's resourceVersion changes with every change of it, so a
//! verdict reached on one version against one desired hash holds until either changes.

use super::compare::{DESIRED_HASH_ANNOTATION, desired_hash, is_up_to_date};
use super::{Context, Error};
use crate::crd::Tenant;
use kube::Resource;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// A desired object as JSON, without the hash annotation, and its desired hash.
pub(super) struct Rendered {
    pub body: Value,
    pub hash: String,
}

impl Rendered {
    pub(super) fn of<K: Serialize>(desired: &K) -> Result<Rendered, Error> {
        let body = serde_json::to_value(desired).map_err(Error::Serialize)?;
        let hash = desired_hash(&body);
        Ok(Rendered { body, hash })
    }

    /// The body to write: with the hash annotation, so that a later pass can tell the
    /// object was written from this desired state.
    pub(super) fn annotated(mut self) -> Value {
        if let Some(meta) = self.body.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(DESIRED_HASH_ANNOTATION.into(), Value::String(self.hash));
            }
        }
        self.body
    }
}

/// A digest of what rendering reads from `tenant`: everything but its status and the
/// fields that change with every write of it (resourceVersion, managed fields).
pub(super) fn render_inputs(tenant: &Tenant) -> String {
    let mut metadata = tenant.metadata.clone();
    metadata.resource_version = None;
    metadata.managed_fields = None;
    let inputs = json!({"metadata": metadata, "spec": tenant.spec});
    hex::encode(&Sha256::digest(inputs.to_string().as_bytes())[..16])
}

/// One tenant's desired hashes and verdicts, by object (kind and name: the namespace is
/// the tenant's). Kept for every tenant, so kept small: objects by a digest of their kind
/// and name, versions by a digest, desired hashes as the 128-bit numbers they spell.
#[derive(Clone, Debug, Default)]
pub(super) struct Verdicts {
    /// The render inputs the hashes were computed from.
    inputs: String,
    objects: HashMap<u64, Known>,
}

#[derive(Clone, Debug, Default)]
struct Known {
    hash: Option<u128>,
    /// The object version judged (its digest), against which hash, and whether it was
    /// current.
    verdict: Option<(u64, u128, bool)>,
}

/// A digest of a string that tells it from the others of its kind (object names,
/// resourceVersions) with a chance of confusion of about 2^-64.
fn digest(parts: &[&str]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    for part in parts {
        std::hash::Hash::hash(part, &mut hasher);
    }
    std::hash::Hasher::finish(&hasher)
}

fn object_digest(object: &(&'static str, String)) -> u64 {
    digest(&[object.0, &object.1])
}

/// A desired hash (`compare::desired_hash`: 32 hex digits) as its number.
fn hash_number(hash: &str) -> Option<u128> {
    (hash.len() == 32)
        .then(|| u128::from_str_radix(hash, 16).ok())
        .flatten()
}

fn hash_text(hash: u128) -> String {
    format!("{hash:032x}")
}

impl Verdicts {
    fn hash(&self, inputs: &str, object: &(&'static str, String)) -> Option<String> {
        if self.inputs != inputs {
            return None;
        }
        self.objects
            .get(&object_digest(object))?
            .hash
            .map(hash_text)
    }

    /// Remembers `hash` for `object` rendered from `inputs`; hashes from other inputs are
    /// forgotten (verdicts stay: they name the hash they were reached against).
    fn remember_hash(&mut self, inputs: &str, object: (&'static str, String), hash: String) {
        if self.inputs != inputs {
            self.inputs = inputs.to_owned();
            for known in self.objects.values_mut() {
                known.hash = None;
            }
        }
        self.objects.entry(object_digest(&object)).or_default().hash = hash_number(&hash);
    }

    fn verdict(&self, object: &(&'static str, String), version: &str, hash: &str) -> Option<bool> {
        let hash = hash_number(hash)?;
        match self.objects.get(&object_digest(object))?.verdict {
            Some((v, h, current)) if v == digest(&[version]) && h == hash => Some(current),
            _ => None,
        }
    }

    fn remember_verdict(
        &mut self,
        object: (&'static str, String),
        version: String,
        hash: String,
        current: bool,
    ) {
        let Some(hash) = hash_number(&hash) else {
            return;
        };
        self.objects
            .entry(object_digest(&object))
            .or_default()
            .verdict = Some((digest(&[&version]), hash, current));
    }
}

impl Context {
    /// Whether `observed` carries the desired hash of `desired` and holds every field of
    /// it (`compare::is_up_to_date`), `desired` being rendered from `inputs`
    /// ([`render_inputs`]). Reuses what an earlier pass worked out for the same inputs and
    /// the same version of `observed`.
    ///
    /// `version` is the observed object's resourceVersion; `observed` gives the object as
    /// JSON, asked for only when no verdict on that version is known (`None`: it is gone).
    pub(super) fn is_current<K>(
        &self,
        tenant: &Tenant,
        inputs: &str,
        desired: &K,
        version: Option<&str>,
        observed: impl FnOnce() -> Option<Value>,
    ) -> Result<bool, Error>
    where
        K: k8s_openapi::Resource + Resource<DynamicType = ()> + Serialize,
    {
        let object = (K::KIND, desired.meta().name.clone().unwrap_or_default());
        let mut rendered = None;
        let hash = match self.memo(tenant, |m| m.verdicts.hash(inputs, &object)) {
            Some(hash) => hash,
            None => {
                let fresh = Rendered::of(desired)?;
                let hash = fresh.hash.clone();
                self.memo(tenant, |m| {
                    m.verdicts
                        .remember_hash(inputs, object.clone(), hash.clone())
                });
                rendered = Some(fresh);
                hash
            }
        };
        if let Some(version) = version
            && let Some(current) =
                self.memo(tenant, |m| m.verdicts.verdict(&object, version, &hash))
        {
            return Ok(current);
        }
        let rendered = match rendered {
            Some(rendered) => rendered,
            None => Rendered::of(desired)?,
        };
        let Some(observed) = observed() else {
            return Ok(false);
        };
        let current = is_up_to_date(&rendered.body, &observed, &rendered.hash);
        if let Some(version) = version {
            self.memo(tenant, |m| {
                m.verdicts
                    .remember_verdict(object, version.to_owned(), rendered.hash, current)
            });
        }
        Ok(current)
    }
}

impl Context {
    /// [`Context::is_current`] for an object already decoded.
    pub(super) fn is_current_object<K>(
        &self,
        tenant: &Tenant,
        inputs: &str,
        desired: &K,
        observed: &K,
    ) -> Result<bool, Error>
    where
        K: k8s_openapi::Resource + Resource<DynamicType = ()> + Serialize,
    {
        let version = observed.meta().resource_version.as_deref();
        self.is_current(tenant, inputs, desired, version, || {
            serde_json::to_value(observed).ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A desired hash, as `compare::desired_hash` spells one.
    fn h(n: u8) -> String {
        format!("{n:032x}")
    }

    fn object(name: &str) -> (&'static str, String) {
        ("StatefulSet", name.to_owned())
    }

    #[test]
    fn a_verdict_holds_for_its_object_version_and_desired_hash_only() {
        let mut verdicts = Verdicts::default();
        verdicts.remember_verdict(object("a"), "7".into(), h(1), true);
        assert_eq!(verdicts.verdict(&object("a"), "7", &h(1)), Some(true));
        assert_eq!(
            verdicts.verdict(&object("a"), "8", &h(1)),
            None,
            "a new version"
        );
        assert_eq!(
            verdicts.verdict(&object("a"), "7", &h(2)),
            None,
            "a new desired state"
        );
        assert_eq!(
            verdicts.verdict(&object("b"), "7", &h(1)),
            None,
            "another object"
        );
        verdicts.remember_verdict(object("a"), "8".into(), h(1), false);
        assert_eq!(verdicts.verdict(&object("a"), "8", &h(1)), Some(false));
        assert_eq!(
            verdicts.verdict(&object("a"), "7", &h(1)),
            None,
            "only the last one"
        );
    }

    #[test]
    fn desired_hashes_are_kept_as_numbers_and_read_back_as_written() {
        let hash = desired_hash(&json!({"spec": {"replicas": 2}}));
        assert_eq!(hash_number(&hash).map(hash_text), Some(hash.clone()));
        let mut verdicts = Verdicts::default();
        verdicts.remember_hash("spec-1", object("a"), hash.clone());
        assert_eq!(verdicts.hash("spec-1", &object("a")), Some(hash.clone()));
        verdicts.remember_verdict(object("a"), "7".into(), hash.clone(), true);
        assert_eq!(verdicts.verdict(&object("a"), "7", &hash), Some(true));
    }

    #[test]
    fn hashes_rendered_from_other_inputs_are_not_reused() {
        let mut verdicts = Verdicts::default();
        verdicts.remember_hash("spec-1", object("a"), h(1));
        verdicts.remember_hash("spec-1", object("b"), h(2));
        assert_eq!(verdicts.hash("spec-1", &object("a")), Some(h(1)));
        assert_eq!(verdicts.hash("spec-2", &object("a")), None);
        verdicts.remember_hash("spec-2", object("a"), h(3));
        assert_eq!(verdicts.hash("spec-2", &object("a")), Some(h(3)));
        assert_eq!(verdicts.hash("spec-2", &object("b")), None, "from spec-1");
        assert_eq!(verdicts.hash("spec-1", &object("a")), None);
    }

    #[test]
    fn render_inputs_change_with_what_rendering_reads_only() {
        let tenant: Tenant = serde_json::from_value(json!({
            "apiVersion": "neurallog.io/v1", "kind": "Tenant",
            "metadata": {"name": "acme", "uid": "u-1", "resourceVersion": "5", "generation": 1},
            "spec": {"displayName": "Acme"},
        }))
        .expect("a Tenant");
        let inputs = render_inputs(&tenant);

        let mut written = tenant.clone();
        written.metadata.resource_version = Some("6".into());
        written.status = Some(Default::default());
        assert_eq!(render_inputs(&written), inputs, "a status write");

        let mut spec = tenant.clone();
        spec.spec.redis.storage = "5Gi".into();
        assert_ne!(render_inputs(&spec), inputs, "a spec change");

        let mut labelled = tenant.clone();
        labelled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "blue".into());
        assert_ne!(render_inputs(&labelled), inputs, "a label");

        let mut recreated = tenant.clone();
        recreated.metadata.uid = Some("u-2".into());
        assert_ne!(
            render_inputs(&recreated),
            inputs,
            "the same name, another Tenant"
        );
    }
}
