//! Money: exact decimals, never floats (RULES.md preamble).

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Serialize, Serializer};

use super::FieldError;

/// A non-negative amount of CNY with at most two decimal places, parsed from a
/// decimal string. JSON numbers are refused: they would pass through a binary float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(Decimal);

/// Largest amount a claim may carry; far above any figure of the documents,
/// it keeps every product of the rules exact.
const MAX: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

impl Money {
    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        let t = s.trim();
        let well_formed = !t.is_empty()
            && t.bytes().all(|c| c.is_ascii_digit() || c == b'.' || c == b'-')
            && !t.starts_with('.')
            && !t.ends_with('.');
        let d = Decimal::from_str(t)
            .ok()
            .filter(|_| well_formed)
            .ok_or_else(|| FieldError::new(field, "invalid_format", "money is a decimal string such as \"1300.00\""))?;
        if d.is_sign_negative() && !d.is_zero() {
            return Err(FieldError::new(field, "out_of_range", "money must not be negative"));
        }
        if d.scale() > 2 {
            return Err(FieldError::new(field, "invalid_format", "money has at most 2 decimal places"));
        }
        if d > MAX {
            return Err(FieldError::new(field, "out_of_range", "amount is too large"));
        }
        Ok(Self(d.abs()))
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
        for ok in ["500", "500.5", "500.50", "0", "0.00", "1000000000"] {
            assert!(Money::parse(ok, "/f").is_ok(), "{ok}");
        }
        assert_eq!(Money::parse("500.505", "/f").unwrap_err().code, "invalid_format");
        assert_eq!(Money::parse("-1.00", "/f").unwrap_err().code, "out_of_range");
        assert_eq!(Money::parse("1e3", "/f").unwrap_err().code, "invalid_format");
        assert_eq!(Money::parse("", "/f").unwrap_err().code, "invalid_format");
        assert_eq!(Money::parse("1000000000.01", "/f").unwrap_err().code, "out_of_range");
        assert_eq!(Money::parse("500.5", "/f").unwrap().to_string(), "500.50");
    }

    #[test]
    fn only_digits_and_one_point_inside_make_an_amount() {
        // Each of these rust_decimal alone would read as a number.
        for bad in ["+500", "1_000", "1_000.00", ".5", "5.", "+.5"] {
            assert_eq!(Money::parse(bad, "/f").unwrap_err().code, "invalid_format", "{bad}");
        }
        assert_eq!(Money::parse(" 500.00 ", "/f").unwrap().to_string(), "500.00");
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(Money::round(Decimal::new(12345, 3)).to_string(), "12.35");
        assert_eq!(Money::round(Decimal::new(12344, 3)).to_string(), "12.34");
        assert_eq!(Money::round(Decimal::new(5, 3)).to_string(), "0.01");
    }
}
