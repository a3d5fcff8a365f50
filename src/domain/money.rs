//! Money: exact decimals, never floats (RULES.md preamble).

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Serialize, Serializer};

use super::FieldError;

/// A non-negative amount of CNY with at most two decimal places, parsed from a
/// decimal string. JSON numbers are refused: they would pass through a binary float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(Decimal);

/// Most digits before the decimal point: 999,999,999.99 is far above any
/// figure of the documents, and keeps every product of the rules exact.
const MAX_WHOLE_DIGITS: usize = 9;
/// Most digits after it: fen.
const MAX_PLACES: usize = 2;

impl Money {
    /// The schema's pattern, written from the limits the reader checks:
    /// `^[0-9]{1,9}(\.[0-9]{1,2})?$`.
    pub fn pattern() -> String {
        format!("^[0-9]{{1,{MAX_WHOLE_DIGITS}}}(\\.[0-9]{{1,{MAX_PLACES}}})?$")
    }

    /// Reads exactly what [`Money::pattern`] admits (no sign, no exponent, no
    /// surrounding space); the error says which limit a refused amount broke.
    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        let malformed = || FieldError::new(field, "invalid_format", "money is a decimal string such as \"1300.00\"");
        let (negative, unsigned) = s.strip_prefix('-').map_or((false, s), |rest| (true, rest));
        let (whole, fraction) = unsigned.split_once('.').map_or((unsigned, None), |(w, f)| (w, Some(f)));
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|c| c.is_ascii_digit());
        if !digits(whole) || !fraction.is_none_or(digits) {
            return Err(malformed());
        }
        if fraction.is_some_and(|f| f.len() > MAX_PLACES) {
            let message = format!("money has at most {MAX_PLACES} decimal places");
            return Err(FieldError::new(field, "invalid_format", message));
        }
        if negative {
            let zero = unsigned.bytes().all(|c| c == b'0' || c == b'.');
            return Err(if zero {
                malformed()
            } else {
                FieldError::new(field, "out_of_range", "money must not be negative")
            });
        }
        if whole.len() > MAX_WHOLE_DIGITS {
            // Leading zeros count: the pattern limits digits, not the value.
            let message = format!(
                "money has at most {MAX_WHOLE_DIGITS} digits before the decimal point (at most {}.{})",
                "9".repeat(MAX_WHOLE_DIGITS),
                "9".repeat(MAX_PLACES)
            );
            return Err(FieldError::new(field, "out_of_range", message));
        }
        // At most 11 digits: always a Decimal.
        Decimal::from_str(unsigned).map(Self).map_err(|_| malformed())
    }

    /// Rounds half away from zero to 0.01: done once, at the end of a calculation.
    pub fn round(d: Decimal) -> Self {
        let mut r = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        r.rescale(2);
        Self(r)
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

/// Two places always: `"1300.00"`.
pub fn fmt2(d: Decimal) -> String {
    let mut r = d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(2);
    r.to_string()
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fmt2(self.0))
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&fmt2(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_up_to_two_places_and_refuses_the_rest() {
        for ok in ["500", "500.5", "500.50", "0", "0.00", "999999999.99", "000000001"] {
            assert!(Money::parse(ok, "/f").is_ok(), "{ok}");
        }
        assert_eq!(Money::parse("500.505", "/f").unwrap_err().code, "invalid_format");
        assert_eq!(Money::parse("-1.00", "/f").unwrap_err().code, "out_of_range");
        assert_eq!(Money::parse("1e3", "/f").unwrap_err().code, "invalid_format");
        assert_eq!(Money::parse("", "/f").unwrap_err().code, "invalid_format");
        assert_eq!(Money::parse("1000000000", "/f").unwrap_err().code, "out_of_range");
        assert_eq!(Money::parse("0000000001", "/f").unwrap_err().code, "out_of_range");
        assert_eq!(Money::parse("-0.00", "/f").unwrap_err().code, "invalid_format");
        assert_eq!(Money::parse("500.5", "/f").unwrap().to_string(), "500.50");
        let ten = Money::parse("0000000001", "/f").unwrap_err().message;
        assert_eq!(ten, "money has at most 9 digits before the decimal point (at most 999999999.99)");
    }

    #[test]
    fn the_pattern_is_written_from_the_limits() {
        assert_eq!(Money::pattern(), "^[0-9]{1,9}(\\.[0-9]{1,2})?$");
    }

    #[test]
    fn only_digits_and_one_point_inside_make_an_amount() {
        // Each of these rust_decimal alone would read as a number.
        for bad in ["+500", "1_000", "1_000.00", ".5", "5.", "+.5", " 500.00", "500.00 ", "5..0", "5.0.0", "-", "-.5"] {
            assert_eq!(Money::parse(bad, "/f").unwrap_err().code, "invalid_format", "{bad}");
        }
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(Money::round(Decimal::new(12345, 3)).to_string(), "12.35");
        assert_eq!(Money::round(Decimal::new(12344, 3)).to_string(), "12.34");
        assert_eq!(Money::round(Decimal::new(5, 3)).to_string(), "0.01");
    }
}
