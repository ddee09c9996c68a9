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
        let object = K::deserialize(Skipping {
            inner: deserializer,
            level: Level::Object(O::FIELDS, O::METADATA),
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

/// Where in the object a map being decoded is: the object itself, whose `metadata` value
/// and listed fields are special, or its metadata, whose listed fields are skipped.
#[derive(Clone, Copy)]
enum Level {
    Object(&'static [&'static str], &'static [&'static str]),
    Metadata(&'static [&'static str]),
}

impl Level {
    fn skips(self, key: &str) -> bool {
        match self {
            Level::Object(fields, _) => fields.contains(&key),
            Level::Metadata(fields) => fields.contains(&key),
        }
    }

    /// The level of the value of `key` in a map at this level, if it is special.
    fn below(self, key: &str) -> Option<Level> {
        match self {
            Level::Object(_, metadata) if key == "metadata" => Some(Level::Metadata(metadata)),
            _ => None,
        }
    }
}

/// A deserializer whose maps (at `level`) skip the omitted fields; everything else is the
/// inner deserializer's.
struct Skipping<D> {
    inner: D,
    level: Level,
}

macro_rules! forward_to_inner {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.inner.$method(visitor)
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Skipping<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let level = self.level;
        self.inner.deserialize_any(SkippingVisitor {
            inner: visitor,
            level,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let level = self.level;
        self.inner.deserialize_map(SkippingVisitor {
            inner: visitor,
            level,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let level = self.level;
        self.inner.deserialize_struct(
            name,
            fields,
            SkippingVisitor {
                inner: visitor,
                level,
            },
        )
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        let level = self.level;
        self.inner.deserialize_option(SkippingVisitor {
            inner: visitor,
            level,
        })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let level = self.level;
        self.inner.deserialize_newtype_struct(
            name,
            SkippingVisitor {
                inner: visitor,
                level,
            },
        )
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
struct SkippingVisitor<V> {
    inner: V,
    level: Level,
}

macro_rules! forward_visit {
    ($($method:ident($type:ty)),*) => {$(
        fn $method<E: de::Error>(self, value: $type) -> Result<Self::Value, E> {
            self.inner.$method(value)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for SkippingVisitor<V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(SkippingMap {
            inner: map,
            level: self.level,
            next_value: None,
        })
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Skipping {
            inner: deserializer,
            level: self.level,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Skipping {
            inner: deserializer,
            level: self.level,
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
struct SkippingMap<A> {
    inner: A,
    level: Level,
    /// The level of the value whose key was just read, when that value is special.
    next_value: Option<Level>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkippingMap<A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        mut seed: S,
    ) -> Result<Option<S::Value>, Self::Error> {
        loop {
            let key = self.inner.next_key_seed(KeySeed {
                seed,
                level: self.level,
            })?;
            match key {
                None => return Ok(None),
                Some(Key::Kept { value, below }) => {
                    self.next_value = below;
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
        match self.next_value.take() {
            Some(level) => self.inner.next_value_seed(SkippingSeed { seed, level }),
            None => self.inner.next_value_seed(seed),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A key as read: an omitted one (with the seed back, for the next key), or a kept one
/// decoded by the map's own seed.
enum Key<S, T> {
    Skipped(S),
    Kept { value: T, below: Option<Level> },
}

/// Reads a key as a string, without allocating when the parser can lend it, and decodes
/// it with `seed` unless it is omitted.
struct KeySeed<S> {
    seed: S,
    level: Level,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<S> {
    type Value = Key<S, S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, S: DeserializeSeed<'de>> KeySeed<S> {
    fn key<E: de::Error>(
        self,
        key: &str,
        decode: impl FnOnce(S) -> Result<S::Value, E>,
    ) -> Result<Key<S, S::Value>, E> {
        if self.level.skips(key) {
            return Ok(Key::Skipped(self.seed));
        }
        let below = self.level.below(key);
        Ok(Key::Kept {
            value: decode(self.seed)?,
            below,
        })
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for KeySeed<S> {
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

/// The seed of a special value (an object's `metadata`), decoded at its own level.
struct SkippingSeed<S> {
    seed: S,
    level: Level,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for SkippingSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        self.seed.deserialize(Skipping {
            inner: deserializer,
            level: self.level,
        })
    }
}

#[cfg(test)]
mod tests;
