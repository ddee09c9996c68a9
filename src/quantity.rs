//! Kubernetes quantities (`resource.Quantity`): `200m`, `1.5`, `256Mi`, `1e3`, ...
//!
//! A [`Quantity`] holds an exact integer number of milli-units, so that CPU and memory
//! can be compared, summed and multiplied without floating point. Like Kubernetes, a
//! value finer than a milli-unit is rounded up (away from zero): `0.1m` is `1m`.
//!
//! Grammar (from `k8s.io/apimachinery/pkg/api/resource`):
//!
//! ```text
//! quantity      ::= [sign] number [suffix]
//! number        ::= digits | digits "." [digits] | "." digits
//! suffix        ::= binarySI | decimalSI | exponent
//! binarySI      ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI     ::= n | u | m | k | M | G | T | P | E
//! exponent      ::= ("e" | "E") [sign] digits
//! ```

use std::fmt;
use std::str::FromStr;

/// Kubernetes documents that no quantity may exceed 2^63-1 in magnitude.
const MAX_UNITS: i128 = i64::MAX as i128;
const MILLI_PER_UNIT: i128 = 1000;
const MAX_MILLI: i128 = MAX_UNITS * MILLI_PER_UNIT;
/// Longest input quoted verbatim in an error message.
const MAX_QUOTED_INPUT: usize = 64;

/// An exact Kubernetes quantity, in milli-units.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    milli: i128,
}

/// Why a string is not a Kubernetes quantity. Each message quotes the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "an empty string is not a Kubernetes quantity; expected one such as 200m, 1, 256Mi or 1Gi"
    )]
    Empty,
    #[error("{} is not a Kubernetes quantity ({reason}); expected one such as 200m, 1.5, 256Mi, 1Gi or 1e3", quote(.input))]
    Malformed { input: String, reason: &'static str },
    #[error("{} is too large: a Kubernetes quantity is at most 2^63-1 ({MAX_UNITS})", quote(.input))]
    TooLarge { input: String },
}

impl Quantity {
    pub const ZERO: Quantity = Quantity { milli: 0 };

    /// Parses Kubernetes quantity syntax exactly.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        parse::quantity(input)
    }

    pub const fn from_milli(milli: i128) -> Self {
        Quantity { milli }
    }

    /// A whole number of units (cores, bytes, ...).
    pub const fn from_units(units: i64) -> Self {
        Quantity {
            milli: units as i128 * MILLI_PER_UNIT,
        }
    }

    /// The exact value in milli-units.
    pub const fn milli(&self) -> i128 {
        self.milli
    }

    pub const fn is_positive(&self) -> bool {
        self.milli > 0
    }

    /// Whether the value is a whole number of units (memory should be whole bytes).
    pub const fn is_whole(&self) -> bool {
        self.milli % MILLI_PER_UNIT == 0
    }

    pub fn checked_mul(&self, factor: i64) -> Option<Self> {
        self.milli
            .checked_mul(i128::from(factor))
            .map(Self::from_milli)
    }

    pub fn checked_add(&self, other: &Self) -> Option<Self> {
        self.milli.checked_add(other.milli).map(Self::from_milli)
    }

    /// Canonical CPU notation: whole cores as `2`, anything else in millicores as `1500m`.
    pub fn to_cpu_string(&self) -> String {
        if self.is_whole() {
            (self.milli / MILLI_PER_UNIT).to_string()
        } else {
            format!("{}m", self.milli)
        }
    }

    /// Canonical byte notation: the largest binary suffix that divides exactly (`3Gi`),
    /// else a plain integer (`1536`); a fractional byte count stays in milli (`1500m`).
    pub fn to_bytes_string(&self) -> String {
        if !self.is_whole() {
            return format!("{}m", self.milli);
        }
        let bytes = self.milli / MILLI_PER_UNIT;
        if bytes != 0 {
            for (suffix, multiplier) in BINARY_SUFFIXES.iter().rev() {
                let multiplier = i128::from(*multiplier);
                if bytes % multiplier == 0 {
                    return format!("{}{suffix}", bytes / multiplier);
                }
            }
        }
        bytes.to_string()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cpu_string())
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Quantity::parse(s)
    }
}

/// Binary suffixes and their multipliers, smallest first.
const BINARY_SUFFIXES: [(&str, u64); 6] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
];

/// Decimal suffixes and their powers of ten.
const DECIMAL_SUFFIXES: [(&str, i32); 9] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// The input as shown in error messages: quoted, escaped and cut short if very long.
fn quote(input: &str) -> String {
    if input.chars().count() <= MAX_QUOTED_INPUT {
        format!("{input:?}")
    } else {
        let head: String = input.chars().take(MAX_QUOTED_INPUT).collect();
        format!("{head:?}...")
    }
}

mod parse {
    //! Quantity syntax to an exact value: `sign * digits * 10^power10 * multiplier`.

    use super::{BINARY_SUFFIXES, DECIMAL_SUFFIXES, MAX_MILLI, Quantity, QuantityError};

    /// Decimal places that matter. A milli value of more than 40 digits is far beyond
    /// [`MAX_MILLI`]; and a fraction whose first non-zero digit lies more than 40 places
    /// past the point stays below one milli-unit even times the largest multiplier
    /// (2^60 < 10^19), so only its being non-zero (rounding up) matters.
    const MAX_SIGNIFICANT_POWER: i128 = 40;

    /// A parsed number before scaling: `digits` with the decimal point removed.
    struct Decimal<'a> {
        negative: bool,
        digits: &'a str,
        fraction_len: usize,
    }

    /// What the suffix multiplies by.
    struct Scale {
        power10: i128,
        multiplier: u64,
    }

    pub(super) fn quantity(input: &str) -> Result<Quantity, QuantityError> {
        if input.is_empty() {
            return Err(QuantityError::Empty);
        }
        let malformed = |reason| QuantityError::Malformed {
            input: input.to_string(),
            reason,
        };
        let (number, rest) = decimal(input).map_err(malformed)?;
        let scale = suffix(rest).map_err(malformed)?;
        let magnitude =
            scaled_magnitude(&number, &scale).ok_or_else(|| QuantityError::TooLarge {
                input: input.to_string(),
            })?;
        let milli = if number.negative {
            -magnitude
        } else {
            magnitude
        };
        Ok(Quantity::from_milli(milli))
    }

    /// Splits off the signed decimal number; returns it and the suffix text.
    fn decimal(input: &str) -> Result<(Decimal<'_>, &str), &'static str> {
        let (negative, unsigned) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        let integer_len = leading_digits(unsigned);
        let after_integer = &unsigned[integer_len..];
        let (fraction_len, rest) = match after_integer.strip_prefix('.') {
            Some(after_point) => {
                let len = leading_digits(after_point);
                (len, &after_point[len..])
            }
            None => (0, after_integer),
        };
        if integer_len + fraction_len == 0 {
            return Err("it does not start with a number");
        }
        let number_text = &unsigned[..unsigned.len() - rest.len()];
        Ok((
            Decimal {
                negative,
                digits: number_text,
                fraction_len,
            },
            rest,
        ))
    }

    fn leading_digits(text: &str) -> usize {
        text.bytes().take_while(u8::is_ascii_digit).count()
    }

    fn suffix(text: &str) -> Result<Scale, &'static str> {
        if text.is_empty() {
            return Ok(Scale {
                power10: 0,
                multiplier: 1,
            });
        }
        if let Some((_, power10)) = DECIMAL_SUFFIXES.iter().find(|(s, _)| *s == text) {
            return Ok(Scale {
                power10: i128::from(*power10),
                multiplier: 1,
            });
        }
        if let Some((_, multiplier)) = BINARY_SUFFIXES.iter().find(|(s, _)| *s == text) {
            return Ok(Scale {
                power10: 0,
                multiplier: *multiplier,
            });
        }
        if let Some(exponent) = text.strip_prefix(['e', 'E']) {
            return exponent_power(exponent).map(|power10| Scale {
                power10,
                multiplier: 1,
            });
        }
        Err(
            "unknown suffix; use one of Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent like e3",
        )
    }

    /// The power of ten of an exponent suffix such as `3`, `+3` or `-3`.
    fn exponent_power(text: &str) -> Result<i128, &'static str> {
        let (negative, digits) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if digits.is_empty() || leading_digits(digits) != digits.len() {
            return Err("an exponent must be e or E followed by an integer, like 1e3");
        }
        // Kubernetes reads the exponent as an int64; longer ones are errors there too.
        let value: i64 = digits.parse().map_err(|_| "the exponent is out of range")?;
        Ok(if negative {
            -i128::from(value)
        } else {
            i128::from(value)
        })
    }

    /// `|number| * scale` in milli-units, rounded up; `None` if beyond [`MAX_MILLI`].
    fn scaled_magnitude(number: &Decimal<'_>, scale: &Scale) -> Option<i128> {
        let digits: Vec<u8> = number
            .digits
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .skip_while(|d| *d == 0)
            .collect();
        if digits.is_empty() {
            return Some(0);
        }
        // value = digits * 10^power * multiplier, in milli-units.
        let power = scale.power10 + 3 - number.fraction_len as i128;
        let magnitude = if power >= 0 {
            whole_times_power(&digits, power, scale.multiplier)?
        } else {
            fraction_times(&digits, (-power) as u128, scale.multiplier)?
        };
        (magnitude <= MAX_MILLI).then_some(magnitude)
    }

    /// `digits * 10^power * multiplier` for a non-negative power.
    fn whole_times_power(digits: &[u8], power: i128, multiplier: u64) -> Option<i128> {
        if digits.len() as i128 + power > MAX_SIGNIFICANT_POWER {
            return None;
        }
        let mut value: i128 = 0;
        for digit in digits {
            value = value.checked_mul(10)?.checked_add(i128::from(*digit))?;
        }
        for _ in 0..power {
            value = value.checked_mul(10)?;
        }
        value.checked_mul(i128::from(multiplier))
    }

    /// `ceil(digits * multiplier / 10^shift)`, computed digit by digit so that neither a
    /// long fraction nor a huge negative exponent needs big integers.
    fn fraction_times(digits: &[u8], shift: u128, multiplier: u64) -> Option<i128> {
        let fraction_len = digits
            .len()
            .min(usize::try_from(shift).unwrap_or(usize::MAX));
        let (whole, fraction) = digits.split_at(digits.len() - fraction_len);
        let whole_part = whole_times_power(whole, 0, multiplier)?;
        // Zeros between the point and the fraction's digits, e.g. 0.000123 => 3.
        let leading_zeros = shift - fraction_len as u128;
        if leading_zeros > MAX_SIGNIFICANT_POWER as u128 {
            // Less than one milli-unit but non-zero (`digits` has no leading zero).
            return whole_part.checked_add(1);
        }
        let (carry, remainder) = multiply_fraction(fraction, leading_zeros, multiplier);
        let rounded_up = carry + u128::from(remainder);
        whole_part.checked_add(i128::try_from(rounded_up).ok()?)
    }

    /// Multiplies the fraction `0.[zeros][digits]` by `multiplier`: returns the integer
    /// part and whether a non-zero fractional part remains.
    fn multiply_fraction(fraction: &[u8], leading_zeros: u128, multiplier: u64) -> (u128, bool) {
        let multiplier = u128::from(multiplier);
        let mut carry: u128 = 0;
        let mut remainder = false;
        let zeros = std::iter::repeat_n(0u8, leading_zeros as usize);
        for digit in fraction.iter().rev().copied().chain(zeros) {
            let product = u128::from(digit) * multiplier + carry;
            remainder |= !product.is_multiple_of(10);
            carry = product / 10;
        }
        (carry, remainder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn milli(input: &str) -> i128 {
        Quantity::parse(input)
            .unwrap_or_else(|e| panic!("{input}: {e}"))
            .milli()
    }

    #[test]
    fn plain_and_decimal_si_numbers() {
        assert_eq!(milli("0"), 0);
        assert_eq!(milli("1"), 1000);
        assert_eq!(milli("+1"), 1000);
        assert_eq!(milli("-1"), -1000);
        assert_eq!(milli("1.5"), 1500);
        assert_eq!(milli(".5"), 500);
        assert_eq!(milli("1."), 1000);
        assert_eq!(milli("200m"), 200);
        assert_eq!(milli("2k"), 2_000_000);
        assert_eq!(milli("1M"), 1_000_000_000);
        assert_eq!(milli("1G"), 1_000_000_000_000);
        assert_eq!(milli("1E"), 1_000_000_000_000_000_000_000);
        assert_eq!(milli("1000000n"), 1);
        assert_eq!(milli("1500u"), 2);
        assert_eq!(milli("007"), 7000);
    }

    #[test]
    fn binary_si_suffixes() {
        assert_eq!(milli("1Ki"), 1024 * 1000);
        assert_eq!(milli("256Mi"), 256 * (1 << 20) * 1000);
        assert_eq!(milli("1.5Gi"), 3 * (1 << 29) * 1000);
        assert_eq!(milli("0.5Ki"), 512_000);
        assert_eq!(milli("1Ei"), (1i128 << 60) * 1000);
    }

    #[test]
    fn exponents() {
        assert_eq!(milli("1e3"), 1_000_000);
        assert_eq!(milli("1E3"), 1_000_000);
        assert_eq!(milli("1e+3"), 1_000_000);
        assert_eq!(milli("15e-1"), 1500);
        assert_eq!(milli("1e-3"), 1);
        assert_eq!(milli("0e999999"), 0);
    }

    #[test]
    fn fractions_below_a_milli_round_up_away_from_zero() {
        assert_eq!(milli("0.1m"), 1);
        assert_eq!(milli("1n"), 1);
        assert_eq!(milli("1.0001"), 1001);
        assert_eq!(milli("-0.1m"), -1);
        assert_eq!(milli("1e-999999999"), 1);
        assert_eq!(
            milli("1.0000000000000000000000000000000000000000000000001"),
            1001
        );
        assert_eq!(
            milli("1.0000000000000000000000000000000000000000000000000"),
            1000
        );
        // 2^60 * 1e-10 = 115292150.4606846976
        assert_eq!(milli("0.0000000001Ei"), 115_292_150_461);
    }

    #[test]
    fn malformed_inputs_are_errors_naming_the_input() {
        for bad in [
            "banana", "1K", "1mi", "1e", "1e1.5", "1.2.3", " 1", "1 ", "--1", ".", "-", "+", "Mi",
            "1Mi ", "1e--3", "1,5", "١",
        ] {
            let err = Quantity::parse(bad).expect_err(bad);
            assert!(
                err.to_string().contains(&format!("{bad:?}")),
                "{bad}: {err}"
            );
        }
        assert_eq!(Quantity::parse(""), Err(QuantityError::Empty));
    }

    #[test]
    fn too_large_quantities_are_errors() {
        assert!(Quantity::parse("9223372036854775807").is_ok());
        for big in [
            "9223372036854775808",
            "9e18k",
            "1e100",
            "16Ei",
            "1e99999999999999999999",
        ] {
            let err = Quantity::parse(big).expect_err(big);
            assert!(
                matches!(
                    err,
                    QuantityError::TooLarge { .. } | QuantityError::Malformed { .. }
                ),
                "{big}: {err}"
            );
        }
        assert!(matches!(
            Quantity::parse("1e100"),
            Err(QuantityError::TooLarge { .. })
        ));
    }

    #[test]
    fn long_inputs_are_cut_short_in_messages() {
        let long = "x".repeat(1000);
        let message = Quantity::parse(&long).expect_err("malformed").to_string();
        assert!(message.len() < 300, "{message}");
    }

    #[test]
    fn comparison_and_arithmetic() {
        let q = |s| Quantity::parse(s).expect("valid");
        assert!(q("500m") < q("1"));
        assert_eq!(q("1024Mi"), q("1Gi"));
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("200m").checked_mul(3), Some(q("600m")));
        assert_eq!(q("1Gi").checked_add(&q("512Mi")), Some(q("1536Mi")));
        assert_eq!(Quantity::from_milli(i128::MAX).checked_mul(2), None);
        assert_eq!(
            Quantity::from_milli(i128::MAX).checked_add(&Quantity::from_milli(1)),
            None
        );
        assert_eq!(Quantity::from_units(2), q("2"));
        assert!(q("1m").is_positive() && !q("0").is_positive() && !q("-1").is_positive());
    }

    #[test]
    fn canonical_cpu_strings() {
        let cpu = |s| Quantity::parse(s).expect("valid").to_cpu_string();
        assert_eq!(cpu("1500m"), "1500m");
        assert_eq!(cpu("1.5"), "1500m");
        assert_eq!(cpu("2000m"), "2");
        assert_eq!(cpu("0.1m"), "1m");
        assert_eq!(cpu("0"), "0");
        assert_eq!(cpu("-250m"), "-250m");
    }

    #[test]
    fn canonical_byte_strings() {
        let bytes = |s| Quantity::parse(s).expect("valid").to_bytes_string();
        assert_eq!(bytes("3Gi"), "3Gi");
        assert_eq!(bytes("3072Mi"), "3Gi");
        assert_eq!(bytes("1536"), "1536");
        assert_eq!(bytes("1.5Ki"), "1536");
        assert_eq!(bytes("1Mi"), "1Mi");
        assert_eq!(bytes("1G"), "1000000000");
        assert_eq!(bytes("0"), "0");
        assert_eq!(bytes("0.5"), "500m");
        assert_eq!(bytes("-2Ki"), "-2Ki");
    }

    proptest! {
        #[test]
        fn parsing_never_panics(input in any::<String>()) {
            let _ = Quantity::parse(&input);
        }

        #[test]
        fn parsing_quantity_like_text_never_panics(
            input in "[-+]?[0-9]{0,30}(\\.[0-9]{0,30})?([eE][-+]?[0-9]{0,25}|[KMGTPE]i|[numkMGTPE])?"
        ) {
            let _ = Quantity::parse(&input);
        }

        #[test]
        fn formatted_quantities_parse_back(milli in -MAX_MILLI..=MAX_MILLI) {
            let q = Quantity::from_milli(milli);
            prop_assert_eq!(Quantity::parse(&q.to_cpu_string()), Ok(q.clone()));
            prop_assert_eq!(Quantity::parse(&q.to_bytes_string()), Ok(q));
        }

        #[test]
        fn binary_multiples_keep_their_suffix(units in -(1i64 << 20)..(1i64 << 20), power in 0usize..4) {
            let (suffix, multiplier) = BINARY_SUFFIXES[power];
            let q = Quantity::from_units(units * multiplier as i64);
            prop_assert_eq!(Quantity::parse(&q.to_bytes_string()), Ok(q.clone()));
            if units % 1024 != 0 {
                prop_assert!(q.to_bytes_string().ends_with(suffix), "{}", q.to_bytes_string());
            }
        }
    }
}
