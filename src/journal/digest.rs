//! SHA-256 digests: record hashes and spec digests.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io;
use std::str::FromStr;

/// A SHA-256 digest. Shown and serialized as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The `prevHash` of the first record of a chain.
    pub const ZERO: Digest = Digest([0; 32]);

    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes)
            .map_err(|e| format!("{s:?} is not a 64-character hex SHA-256 digest: {e}"))?;
        Ok(Digest(bytes))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The hex SHA-256 of `value` rendered as canonical JSON: no whitespace, object keys sorted
/// by their UTF-8 bytes, scalars as `serde_json` writes them. Independent of the order the
/// keys arrived in (and of serde_json's `preserve_order` feature).
pub fn spec_digest(value: &serde_json::Value) -> String {
    let mut hasher = HashWriter(Sha256::new());
    // Writing into a hasher cannot fail, and neither can serializing JSON values.
    let _ = write_canonical(&mut hasher, value);
    hex::encode(hasher.0.finalize())
}

fn write_canonical(out: &mut impl io::Write, value: &serde_json::Value) -> io::Result<()> {
    use serde_json::Value;
    match value {
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(out, item)?;
            }
            out.write_all(b"]")
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.write_all(b"{")?;
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                serde_json::to_writer(&mut *out, key)?;
                out.write_all(b":")?;
                write_canonical(out, item)?;
            }
            out.write_all(b"}")
        }
        scalar => serde_json::to_writer(out, scalar).map_err(io::Error::other),
    }
}

struct HashWriter(Sha256);

impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_hex_round_trips_through_json() {
        let digest = Digest::of(b"abc");
        assert_eq!(
            digest.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), digest);
        assert!("xyz".parse::<Digest>().is_err());
        assert!(Digest::ZERO.is_zero());
    }

    #[test]
    fn spec_digest_ignores_key_order_and_whitespace() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": [1, {"y": true, "x": null}], "a": "s"}"#).unwrap();
        let b = json!({"a": "s", "b": [1, {"x": null, "y": true}]});
        assert_eq!(spec_digest(&a), spec_digest(&b));
        assert_eq!(
            spec_digest(&b),
            hex::encode(Sha256::digest(br#"{"a":"s","b":[1,{"x":null,"y":true}]}"#))
        );
    }

    #[test]
    fn spec_digest_sees_every_value() {
        assert_ne!(
            spec_digest(&json!({"replicas": 1})),
            spec_digest(&json!({"replicas": 2}))
        );
        assert_ne!(spec_digest(&json!([1, 2])), spec_digest(&json!([2, 1])));
    }
}
