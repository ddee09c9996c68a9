//! The primitive encoding every journal value is built from.
//!
//! Integers are fixed-width big endian, strings are a `u32` big-endian byte length followed
//! by UTF-8, digests are 32 raw bytes. Fixed widths (no varints) keep the encoding
//! canonical: a value has exactly one encoding, so hashing the stored bytes is the same as
//! hashing a re-encoding of the decoded value.
//!
//! [`Reader`] never panics on bad input: every read checks bounds and returns a
//! [`DecodeError`] naming the field.

use std::fmt;

/// Appends primitives to a byte buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn u8(&mut self, value: u8) -> &mut Self {
        self.buf.push(value);
        self
    }

    pub fn u32(&mut self, value: u32) -> &mut Self {
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn i32(&mut self, value: i32) -> &mut Self {
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u64(&mut self, value: u64) -> &mut Self {
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn i64(&mut self, value: i64) -> &mut Self {
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn digest(&mut self, value: &[u8; 32]) -> &mut Self {
        self.buf.extend_from_slice(value);
        self
    }

    /// Writes a length-prefixed string. Strings longer than `u32::MAX` bytes cannot be
    /// encoded; callers validate lengths first (see [`Writer::fits`]).
    pub fn str(&mut self, value: &str) -> &mut Self {
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.buf
            .extend_from_slice(&value.as_bytes()[..len as usize]);
        self
    }

    /// Whether `value` can be written by [`Writer::str`] without truncation.
    pub fn fits(value: &str) -> bool {
        u32::try_from(value.len()).is_ok()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads primitives from a byte slice, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::new(
                field,
                DecodeProblem::Truncated {
                    needed: len,
                    available: self.remaining(),
                },
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    pub fn digest(&mut self, field: &'static str) -> Result<[u8; 32], DecodeError> {
        self.array(field)
    }

    pub fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u32(field)? as usize;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::new(field, DecodeProblem::InvalidUtf8))
    }

    /// A presence tag: 0 = absent, 1 = present; anything else is an error.
    pub fn present(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::invalid(
                field,
                format!("presence tag {tag} is neither 0 nor 1"),
            )),
        }
    }

    /// Succeeds only if every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::new(
                "end of value",
                DecodeProblem::TrailingBytes(extra),
            )),
        }
    }
}

/// A value could not be decoded: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub field: &'static str,
    pub problem: DecodeProblem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeProblem {
    Truncated { needed: usize, available: usize },
    InvalidUtf8,
    TrailingBytes(usize),
    Invalid(String),
}

impl DecodeError {
    pub fn new(field: &'static str, problem: DecodeProblem) -> Self {
        Self { field, problem }
    }

    pub fn invalid(field: &'static str, why: impl Into<String>) -> Self {
        Self::new(field, DecodeProblem::Invalid(why.into()))
    }

    pub fn is_truncation(&self) -> bool {
        matches!(self.problem, DecodeProblem::Truncated { .. })
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            DecodeProblem::Truncated { needed, available } => write!(
                f,
                "value ends early at {}: needed {needed} more bytes, {available} left",
                self.field
            ),
            DecodeProblem::InvalidUtf8 => write!(f, "{} is not valid UTF-8", self.field),
            DecodeProblem::TrailingBytes(n) => {
                write!(f, "{n} unexpected bytes after the last field")
            }
            DecodeProblem::Invalid(why) => write!(f, "{}: {why}", self.field),
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut w = Writer::default();
        w.u8(7)
            .u32(70_000)
            .i32(-3)
            .u64(u64::MAX)
            .i64(-9)
            .str("héllo")
            .digest(&[5; 32]);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a"), Ok(7));
        assert_eq!(r.u32("b"), Ok(70_000));
        assert_eq!(r.i32("c"), Ok(-3));
        assert_eq!(r.u64("d"), Ok(u64::MAX));
        assert_eq!(r.i64("e"), Ok(-9));
        assert_eq!(r.str("f"), Ok("héllo"));
        assert_eq!(r.digest("g"), Ok([5; 32]));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn short_input_is_an_error_naming_the_field() {
        let mut r = Reader::new(&[0, 0, 0, 9, b'a']);
        let err = r.str("message").unwrap_err();
        assert_eq!(err.field, "message");
        assert!(err.is_truncation());
    }

    #[test]
    fn bad_utf8_tags_and_trailing_bytes_are_errors() {
        assert_eq!(
            Reader::new(&[0, 0, 0, 1, 0xff])
                .str("s")
                .unwrap_err()
                .problem,
            DecodeProblem::InvalidUtf8
        );
        assert!(Reader::new(&[2]).present("opt").is_err());
        let mut r = Reader::new(&[1, 2]);
        r.u8("x").unwrap();
        assert_eq!(
            r.finish().unwrap_err().problem,
            DecodeProblem::TrailingBytes(1)
        );
    }
}
