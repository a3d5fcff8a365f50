//! Personal data: people are keyed in the store by a keyed hash of their ID
//! number (HMAC-SHA256 with a secret from configuration), never the number.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::IdNumber;

#[derive(Clone)]
pub struct Pseudonymizer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(***)")
    }
}

impl Pseudonymizer {
    pub fn new(secret: &str) -> Self {
        Self { key: secret.as_bytes().to_vec() }
    }

    /// 128 bits of HMAC-SHA256(secret, id number), hex: the person's key in the store.
    pub fn person_key(&self, id: &IdNumber) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(id.as_str().as_bytes());
        let out = mac.finalize().into_bytes();
        format!("p{}", hex::encode(&out[..16]))
    }
}
