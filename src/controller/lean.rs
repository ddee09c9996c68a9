//! Objects decoded without the fields the operator never reads.
//!
//! Every object the API server returns carries `metadata.managedFields`: one entry per
//! field manager, each a tree of the fields it owns, often as large as the object's spec.
//! Decoded, each entry becomes a `serde_json::Value` of maps that is dropped at once. At
//! 1,000 tenants that decoding (and the dropping) was a tenth of the operator's CPU.
//! [`Lean`] decodes `K` while the JSON parser skips those fields unread, so nothing is
//! allocated for them; the objects are otherwise exactly what `K` decodes.

use kube::Resource;
use kube::api::ObjectMeta;
use kube::runtime::watcher;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Which fields a [`Lean`] object is decoded without.
pub trait Omitted {
    /// Top-level fields, such as a pod's `spec`.
    const FIELDS: &'static [&'static str];
    /// Fields of `metadata`.
    const METADATA: &'static [&'static str];
}

/// Only `metadata.managedFields`: what no pass reads of any object.
#[derive(Debug)]
pub struct ManagedFields;

impl Omitted for ManagedFields {
    const FIELDS: &'static [&'static str] = &[];
    const METADATA: &'static [&'static str] = &["managedFields"];
}

/// A `K` decoded without the fields `O` names (see the module's documentation). Requests
/// through an `Api<Lean<K>>` go to `K`'s API; it serialises as `K`.
pub struct Lean<K, O = ManagedFields> {
    object: K,
    omitted: PhantomData<fn() -> O>,
}

impl<K, O> Lean<K, O> {
    pub fn new(object: K) -> Self {
        Lean {
            object,
            omitted: PhantomData,
        }
    }

    pub fn into_inner(self) -> K {
        self.object
    }
}

impl<K: Clone, O> Clone for Lean<K, O> {
    fn clone(&self) -> Self {
        Lean::new(self.object.clone())
    }
}

impl<K: fmt::Debug, O> fmt::Debug for Lean<K, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.object.fmt(f)
    }
}

impl<K: Resource, O> Resource for Lean<K, O> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn url_path(dt: &Self::DynamicType, namespace: Option<&str>) -> String {
        K::url_path(dt, namespace)
    }

    fn meta(&self) -> &ObjectMeta {
        self.object.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.object.meta_mut()
    }
}

impl<K: Serialize, O> Serialize for Lean<K, O> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.object.serialize(serializer)
    }
}

impl<'de, K: Deserialize<'de>, O: Omitted> Deserialize<'de> for Lean<K, O> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let depth = InObject {
            fields: O::FIELDS,
            metadata: O::METADATA,
        };
        let object = K::deserialize(Skipping {
            inner: deserializer,
            depth,
        })?;
        Ok(Lean::new(object))
    }
}

/// A watch event of lean objects as one of the objects themselves.
pub fn into_inner_event<K, O>(event: watcher::Event<Lean<K, O>>) -> watcher::Event<K> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.into_inner()),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.into_inner()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.into_inner()),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// What the maps at one depth of the object do with their fields. Two depths, two types:
/// were the depth a value, every field type of every object would be compiled again for
/// the deeper one (serde's decoding is generic over the deserializer), which made the
/// binary 7% larger.
trait Depth: Copy {
    fn skips(self, key: &str) -> bool;
    /// Whether the value of `key` is decoded at the next depth.
    fn descends(self, key: &str) -> bool;
    /// Decodes the value of the key just read: at the next depth when it `descends`.
    fn next_value<'de, A: MapAccess<'de>, S: DeserializeSeed<'de>>(
        self,
        map: &mut A,
        seed: S,
        descends: bool,
    ) -> Result<S::Value, A::Error>;
}

/// The object itself: skips its omitted top-level fields, decodes `metadata` as
/// [`InMetadata`].
#[derive(Clone, Copy)]
struct InObject {
    fields: &'static [&'static str],
    metadata: &'static [&'static str],
}

impl Depth for InObject {
    fn skips(self, key: &str) -> bool {
        self.fields.contains(&key)
    }

    fn descends(self, key: &str) -> bool {
        key == "metadata"
    }

    fn next_value<'de, A: MapAccess<'de>, S: DeserializeSeed<'de>>(
        self,
        map: &mut A,
        seed: S,
        descends: bool,
    ) -> Result<S::Value, A::Error> {
        if descends {
            let depth = InMetadata {
                fields: self.metadata,
            };
            map.next_value_seed(SkippingSeed { seed, depth })
        } else {
            map.next_value_seed(seed)
        }
    }
}

/// The object's metadata: skips its omitted fields, and nothing below them.
#[derive(Clone, Copy)]
struct InMetadata {
    fields: &'static [&'static str],
}

impl Depth for InMetadata {
    fn skips(self, key: &str) -> bool {
        self.fields.contains(&key)
    }

    fn descends(self, _: &str) -> bool {
        false
    }

    fn next_value<'de, A: MapAccess<'de>, S: DeserializeSeed<'de>>(
        self,
        map: &mut A,
        seed: S,
        _: bool,
    ) -> Result<S::Value, A::Error> {
        map.next_value_seed(seed)
    }
}

/// A deserializer whose maps (at `depth`) skip the omitted fields; everything else is the
/// inner deserializer's.
struct Skipping<D, P> {
    inner: D,
    depth: P,
}

macro_rules! wrapping_the_visitor {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.inner.$method(SkippingVisitor::new(visitor, self.depth))
        }
    )*};
}

macro_rules! forward_to_inner {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.inner.$method(visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>, P: Depth> Deserializer<'de> for Skipping<D, P> {
    type Error = D::Error;

    wrapping_the_visitor!(deserialize_any, deserialize_map, deserialize_option);

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = SkippingVisitor::new(visitor, self.depth);
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let visitor = SkippingVisitor::new(visitor, self.depth);
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    forward_to_inner!(
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_seq,
        deserialize_identifier,
        deserialize_ignored_any
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.inner.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// The visitor of the decoded type, given maps that skip the omitted fields.
struct SkippingVisitor<V, P> {
    inner: V,
    depth: P,
}

impl<V, P> SkippingVisitor<V, P> {
    fn new(inner: V, depth: P) -> Self {
        SkippingVisitor { inner, depth }
    }
}

macro_rules! forward_visit {
    ($($method:ident($type:ty)),*) => {$(
        fn $method<E: de::Error>(self, value: $type) -> Result<Self::Value, E> {
            self.inner.$method(value)
        }
    )*};
}

impl<'de, V: Visitor<'de>, P: Depth> Visitor<'de> for SkippingVisitor<V, P> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(SkippingMap {
            inner: map,
            depth: self.depth,
            descends: false,
        })
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Skipping {
            inner: deserializer,
            depth: self.depth,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Skipping {
            inner: deserializer,
            depth: self.depth,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(seq)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(data)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        self.inner.visit_borrowed_str(value)
    }

    fn visit_borrowed_bytes<E: de::Error>(self, value: &'de [u8]) -> Result<Self::Value, E> {
        self.inner.visit_borrowed_bytes(value)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_byte_buf(Vec<u8>)
    );
}

/// A map that passes over the omitted fields: their keys are read, their values skipped
/// by the parser without being built.
struct SkippingMap<A, P> {
    inner: A,
    depth: P,
    /// Whether the value whose key was just read is decoded at the next depth.
    descends: bool,
}

impl<'de, A: MapAccess<'de>, P: Depth> MapAccess<'de> for SkippingMap<A, P> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        mut seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        loop {
            let key = self.inner.next_key_seed(KeySeed {
                seed,
                depth: self.depth,
            })?;
            match key {
                None => return Ok(None),
                Some(Key::Kept { value, descends }) => {
                    self.descends = descends;
                    return Ok(Some(value));
                }
                Some(Key::Skipped(returned)) => {
                    self.inner.next_value::<IgnoredAny>()?;
                    seed = returned;
                }
            }
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, Self::Error> {
        let descends = std::mem::take(&mut self.descends);
        self.depth.next_value(&mut self.inner, seed, descends)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A key as read: an omitted one (with the seed back, for the next key), or a kept one
/// decoded by the map's own seed.
enum Key<S, T> {
    Skipped(S),
    Kept { value: T, descends: bool },
}

/// Reads a key as a string, without allocating when the parser can lend it, and decodes
/// it with `seed` unless it is omitted.
struct KeySeed<S, P> {
    seed: S,
    depth: P,
}

impl<'de, S: DeserializeSeed<'de>, P: Depth> DeserializeSeed<'de> for KeySeed<S, P> {
    type Value = Key<S, S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, S: DeserializeSeed<'de>, P: Depth> KeySeed<S, P> {
    fn key<E: de::Error>(
        self,
        key: &str,
        decode: impl FnOnce(S) -> Result<S::Value, E>,
    ) -> Result<Key<S, S::Value>, E> {
        if self.depth.skips(key) {
            return Ok(Key::Skipped(self.seed));
        }
        let descends = self.depth.descends(key);
        Ok(Key::Kept {
            value: decode(self.seed)?,
            descends,
        })
    }
}

impl<'de, S: DeserializeSeed<'de>, P: Depth> Visitor<'de> for KeySeed<S, P> {
    type Value = Key<S, S::Value>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        self.key(key, |seed| {
            seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
        })
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        self.key(key, |seed| {
            seed.deserialize(de::IntoDeserializer::into_deserializer(key))
        })
    }
}

/// The seed of a value decoded at the next depth (an object's `metadata`).
struct SkippingSeed<S, P> {
    seed: S,
    depth: P,
}

impl<'de, S: DeserializeSeed<'de>, P: Depth> DeserializeSeed<'de> for SkippingSeed<S, P> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.seed.deserialize(Skipping {
            inner: deserializer,
            depth: self.depth,
        })
    }
}

#[cfg(test)]
mod tests;
