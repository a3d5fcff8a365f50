//! Parsed, valid domain types: once a value is one of these, the rest of the
//! code trusts it.

mod claim;
mod codes;
mod id_number;
mod money;

pub use claim::*;
pub use codes::*;
pub use id_number::{IdNumber, Sex};
pub use money::{fmt2, Money};
