//! Parsed, valid domain types: once a value is one of these, the rest of the
//! code trusts it.

mod claim;
mod claim_schema;
mod codes;
mod id_number;
mod json;
mod money;
mod read;
mod values;

pub use claim::*;
pub use codes::*;
pub use id_number::{IdNumber, Sex};
pub use json::{Json, Node};
pub use money::{fmt2, Money};
pub use read::{pointer, FieldError, Fields, FromJson};
pub use values::*;

/// The number an all-ASCII-digit slice spells (the caller has checked the
/// digits; at most 9 of them).
pub(crate) fn digits_value(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0'))
}
