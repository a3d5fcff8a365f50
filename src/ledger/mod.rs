//! The ledger: the only code that touches sled.
//!
//! One tree, keys by prefix. Every write goes through one writer thread that
//! takes whatever claims are waiting (group commit), decides them in arrival
//! order against the store plus the group's own pending writes, applies the
//! whole group as one atomic sled batch, flushes once, and only then answers
//! each waiting request. Decisions touching the same person, certificate,
//! institution or key are therefore serialised, and each reply is durable.
//! A Bloom filter over the keys ([`Presence`]) spares the store the reads of
//! keys it certainly lacks.

mod maintenance;
mod presence;
mod store;
mod writer;

pub use maintenance::{check, export, import};
pub use presence::{Presence, PresenceView};
pub use store::*;
pub use writer::*;
