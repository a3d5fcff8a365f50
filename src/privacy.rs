//! Personal data: people are keyed in the store by a keyed hash of their ID
//! number (HMAC-SHA256 with a secret from configuration), never the number.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{IdNumber, Json, Node};

/// Decodes hex of exactly `out.len()` bytes: `2 × out.len()` digits of
/// either case, nothing before or after (faster-hex alone accepts a longer
/// input and decodes only its start).
pub fn decode_hex(s: &str, out: &mut [u8]) -> bool {
    s.len() == out.len() * 2 && faster_hex::hex_decode(s.as_bytes(), out).is_ok()
}

#[derive(Clone)]
pub struct Pseudonymizer {
    /// HMAC-SHA256 keyed with the secret, before any message: cloned for
    /// each hash, so the key is processed once.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymizer(***)")
    }
}

impl Pseudonymizer {
    pub fn new(secret: &str) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
        Self { mac }
    }

    /// 128 bits of HMAC-SHA256(secret, id number), hex: the person's key in the store.
    pub fn person_key(&self, id: &IdNumber) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_str().as_bytes());
        let out = mac.finalize().into_bytes();
        let mut key = String::with_capacity(33);
        key.push('p');
        key.push_str(&faster_hex::hex_string(&out[..16]));
        key
    }
}

/// The hashes of a claim's body that idempotency compares: keyed (HMAC with
/// the configured secret; what layout v2 stores, so that a stored hash
/// cannot be used to guess the ID number and name it was taken over) and
/// plain SHA-256 (what layout v1 stored; records moved from v1 keep it).
#[derive(Debug, Clone)]
pub struct BodyHashes {
    pub keyed: String,
    pub plain: String,
}

/// Marks a keyed body hash.
const KEYED: &str = "hmac:";

impl BodyHashes {
    /// Whether a stored hash is of this body.
    pub fn matches(&self, stored: &str) -> bool {
        if stored.starts_with(KEYED) {
            stored == self.keyed
        } else {
            stored == self.plain
        }
    }
}

impl Pseudonymizer {
    /// Whether `stored`, a body hash as recorded, is of `body`; only that
    /// hash is computed. A plain (unkeyed) hash, which anyone can compute,
    /// counts only where `plain_allowed` (records of releases before keyed
    /// hashes).
    pub fn is_body_of<J: crate::domain::Json>(&self, stored: &str, body: &J, plain_allowed: bool) -> bool {
        if !plain_allowed && !stored.starts_with(KEYED) {
            return false;
        }
        let canonical = crate::domain::canonical_body(body);
        match stored.strip_prefix(KEYED) {
            Some(keyed) => {
                let mut expected = [0u8; 32];
                decode_hex(keyed, &mut expected) && self.body_mac(&canonical).verify_slice(&expected).is_ok()
            }
            None => stored == plain_hash(&canonical),
        }
    }

    /// The body's hashes (object keys sorted, spacing ignored).
    pub fn body_hashes<J: crate::domain::Json>(&self, body: &J) -> BodyHashes {
        let canonical = crate::domain::canonical_body(body);
        BodyHashes {
            keyed: format!("{KEYED}{}", faster_hex::hex_string(&self.body_mac(&canonical).finalize().into_bytes())),
            plain: plain_hash(&canonical),
        }
    }

    /// The keyed hash of a canonical body, before it is finalised.
    fn body_mac(&self, canonical: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(b"claim body\0");
        mac.update(canonical);
        mac
    }
}

/// The plain (unkeyed) hash of a canonical body, as releases before keyed
/// hashes recorded it.
fn plain_hash(canonical: &[u8]) -> String {
    use sha2::Digest;
    faster_hex::hex_string(&Sha256::digest(canonical))
}

/// Seals the personal fields of a claim as submitted (the applicant's ID
/// number and name) with ChaCha20-Poly1305 (RFC 8439, a random 96-bit
/// nonce each time; `ring`'s implementation, which is quick on payloads of a
/// few dozen bytes) before it is stored. The key is derived from the same
/// configured secret as the person keys (HMAC-SHA256 of a fixed label), so a
/// store is readable only with its configuration. The stored claim shows the
/// masked forms; `unseal_node` restores the claim exactly as submitted (to
/// decide it again). The seal is bound to the claim's id, the key of its
/// record (associated data, marked `"bound": "claim_id"`): sealed fields
/// moved into another claim's record do not open there. Claims sealed
/// before the binding carry no mark and open without it.
#[derive(Clone)]
pub struct Sealer {
    key: std::sync::Arc<ring::aead::LessSafeKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

const SEAL_LABEL: &[u8] = b"subsidy-service record seal v1";
/// The sealed part's `alg`.
const SEAL_ALG: &str = "chacha20poly1305";
const NONCE_LEN: usize = ring::aead::NONCE_LEN;
/// The applicant's fields kept only sealed.
const SEALED_FIELDS: [&str; 2] = ["id_number", "name"];
/// The sealed part's `bound`: what the seal's associated data is.
const BOUND_TO_CLAIM_ID: &str = "claim_id";

/// The associated data of a seal bound to claim `id`.
fn bound_to(id: &str) -> Vec<u8> {
    [b"subsidy-service claim_id\0", id.as_bytes()].concat()
}

impl Sealer {
    pub fn new(secret: &str) -> Self {
        use ring::aead::{LessSafeKey, UnboundKey, CHACHA20_POLY1305};
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
        mac.update(SEAL_LABEL);
        let key = mac.finalize().into_bytes();
        // A 32-byte key is what ChaCha20-Poly1305 takes, so this cannot fail.
        let key = UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap_or_else(|_| unreachable!());
        Self { key: std::sync::Arc::new(LessSafeKey::new(key)) }
    }

    /// [`Self::seal_node`] of a `Value` (the tests' claims), for the record of
    /// its own `claim_id`.
    #[cfg(test)]
    pub fn seal_claim(&self, body: &serde_json::Value, id_masked: Option<&str>) -> serde_json::Value {
        let claim_id = body["claim_id"].as_str().unwrap_or_default();
        self.seal_node(Node::from(body.clone()), claim_id, id_masked).to_value()
    }

    /// The claim with `applicant.id_number` and `applicant.name` masked, and
    /// both sealed under `sealed`, bound to `claim_id` (its record's key); its
    /// other text stays borrowed.
    pub fn seal_node<'a>(&self, mut v: Node<'a>, claim_id: &str, id_masked: Option<&str>) -> Node<'a> {
        use ring::aead::{Aad, Nonce};
        use ring::rand::SecureRandom;
        /// The sealed fields, written as `{"id_number":…,"name":…}` (`null` when not given).
        #[derive(serde::Serialize)]
        struct Secret<'n, 'a> {
            id_number: Option<&'n Node<'a>>,
            name: Option<&'n Node<'a>>,
        }
        let aad = bound_to(claim_id);
        let Some(a) = v.get_mut("applicant").filter(|a| a.is_object()) else { return v };
        // Serialising a JSON value cannot fail.
        let mut data =
            serde_json::to_vec(&Secret { id_number: a.get("id_number"), name: a.get("name") }).unwrap_or_default();
        let mut nonce = [0u8; NONCE_LEN];
        // Without randomness or past the cipher's length limit nothing is
        // sealed: the personal fields are dropped, never stored in clear.
        let sealed = ring::rand::SystemRandom::new().fill(&mut nonce).is_ok()
            && self
                .key
                .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut data)
                .is_ok();
        if !sealed {
            a.remove("id_number");
            a.remove("name");
            return v;
        }
        a.insert("id_number", id_masked.map_or(Node::Null, |m| Node::String(m.to_string().into())));
        if let Some(name) = a.get("name").and_then(Json::as_str) {
            let masked: String = name.chars().enumerate().map(|(i, c)| if i == 0 { c } else { '*' }).collect();
            a.insert("name", Node::String(masked.into()));
        }
        let text = |k: &'static str, x: String| (k.into(), Node::String(x.into()));
        v.insert(
            "sealed",
            Node::Object(vec![
                text("alg", SEAL_ALG.to_string()),
                text("bound", BOUND_TO_CLAIM_ID.to_string()),
                text("data", faster_hex::hex_string(&data)),
                text("nonce", faster_hex::hex_string(&nonce)),
            ]),
        );
        v
    }

    /// The claim exactly as submitted, read from the record of `claim_id`:
    /// the personal fields of its `sealed` part put back into `applicant` (a
    /// field never given stays out).
    ///
    /// Answers whether its seal was bound to the claim id (`None`: nothing
    /// was sealed, as for an organisation's claim).
    pub fn unseal_node(&self, v: &mut Node<'_>, claim_id: &str) -> anyhow::Result<Option<bool>> {
        let Some(sealed) = v.remove("sealed") else { return Ok(None) };
        let bound = sealed.get("bound").is_some();
        let plain = self.open(&sealed, claim_id)?;
        let mut secret = Node::parse(&plain)?;
        if let Some(a) = v.get_mut("applicant") {
            for k in SEALED_FIELDS {
                match secret.remove(k) {
                    Some(Node::Null) | None => {
                        a.remove(k);
                    }
                    Some(x) => a.insert(k, x.into_owned()),
                }
            }
        }
        Ok(Some(bound))
    }

    /// The personal fields the `sealed` part of the record of `claim_id`
    /// holds, as JSON text.
    fn open<J: Json>(&self, sealed: &J, claim_id: &str) -> anyhow::Result<Vec<u8>> {
        use anyhow::Context;
        use ring::aead::{Aad, Nonce};
        let field = |k: &str| sealed.get(k).and_then(J::as_str).context("a sealed claim lacks a field");
        let aad = match sealed.get("bound").map(|b| b.as_str()) {
            None => Vec::new(),
            Some(Some(BOUND_TO_CLAIM_ID)) => bound_to(claim_id),
            Some(_) => anyhow::bail!("a sealed claim is bound to something this release does not know"),
        };
        let mut nonce = [0u8; NONCE_LEN];
        if !decode_hex(field("nonce")?, &mut nonce) {
            anyhow::bail!("a sealed claim's nonce is not 12 bytes of hex");
        }
        let data = field("data")?;
        let mut data_bytes = vec![0u8; data.len() / 2];
        if !decode_hex(data, &mut data_bytes) {
            anyhow::bail!("a sealed field is not hex");
        }
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut data_bytes)
            .map_err(|_| anyhow::anyhow!("the sealed fields do not open with this configuration's secret"))?
            .len();
        data_bytes.truncate(plain);
        Ok(data_bytes)
    }

    /// The stored claim as an auditor sees it: masked, without the sealed part.
    pub fn shown(stored: &serde_json::Value) -> serde_json::Value {
        let mut v = stored.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("sealed");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored claim as a replay opens it from the record of its own
    /// `claim_id`: read from its text as a node.
    fn unseal(sealer: &Sealer, stored: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        unseal_in(sealer, stored, stored["claim_id"].as_str().unwrap_or_default())
    }

    /// A stored claim as a replay opens it from the record of `record`.
    fn unseal_in(sealer: &Sealer, stored: &serde_json::Value, record: &str) -> anyhow::Result<serde_json::Value> {
        let text = stored.to_string();
        let mut node = Node::parse(text.as_bytes())?;
        sealer.unseal_node(&mut node, record)?;
        Ok(node.to_value())
    }

    #[test]
    fn hex_decodes_only_exactly_the_length_asked_for() {
        let digest = "ab".repeat(32);
        let mut out = [0u8; 32];
        assert!(decode_hex(&digest, &mut out));
        assert_eq!(out, [0xab; 32]);
        assert!(decode_hex(&digest.to_uppercase(), &mut out), "either case");
        for bad in [
            "ab".repeat(31),                 // 62 digits
            format!("{}a", "ab".repeat(31)), // 63
            format!("{digest}00"),           // 66: a longer input is not cut to fit
            "ab".repeat(64),                 // 128
            format!("0x{}", "ab".repeat(31)),
            format!("{}g", &digest[..63]),
            String::new(),
        ] {
            assert!(!decode_hex(&bad, &mut out), "{bad}");
        }
        assert!(decode_hex("", &mut []), "nothing is zero bytes");
    }

    #[test]
    fn the_person_key_is_p_and_32_lowercase_hex_digits() {
        let id = crate::domain::IdNumber::parse("11010519491231002X", "").expect("a valid number");
        let key = Pseudonymizer::new("secret").person_key(&id);
        assert_eq!(key.len(), 33);
        assert!(
            key.starts_with('p') && key[1..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{key}"
        );
        assert_eq!(key, Pseudonymizer::new("secret").person_key(&id), "the same number, the same key");
        assert_ne!(key, Pseudonymizer::new("another").person_key(&id), "another secret, another key");
    }

    #[test]
    fn a_sealed_claim_shows_masks_and_opens_to_the_claim_as_submitted() {
        let body = serde_json::json!({
            "claim_id": "S-1",
            "applicant": {"id_number": "330723199005060038", "name": "张三丰", "local_hukou": true}
        });
        let s = Sealer::new("secret");
        let sealed = s.seal_claim(&body, Some("330723********0038"));
        let text = sealed.to_string();
        assert!(!text.contains("330723199005060038") && !text.contains("张三丰"), "{text}");
        assert_eq!(Sealer::shown(&sealed)["applicant"]["name"], "张**");
        assert_eq!(Sealer::shown(&sealed)["applicant"]["id_number"], "330723********0038");
        assert!(Sealer::shown(&sealed).get("sealed").is_none());
        assert_eq!(unseal(&s, &sealed).expect("opens"), body);
        let err = unseal(&Sealer::new("another"), &sealed).expect_err("another secret");
        assert!(err.to_string().contains("do not open"));
        // A field never given stays out.
        let nameless = serde_json::json!({"applicant": {"id_number": "330723199005060038"}});
        let sealed = s.seal_claim(&nameless, Some("330723********0038"));
        assert_eq!(Sealer::shown(&sealed)["applicant"]["id_number"], "330723********0038");
        assert_eq!(unseal(&s, &sealed).expect("opens"), nameless);
        // What is sealed, exactly: both fields in this order, `null` for one not given.
        assert_eq!(s.open(&sealed["sealed"], "").expect("opens"), br#"{"id_number":"330723199005060038","name":null}"#);
        let text = body.to_string();
        let sealed = s.seal_node(Node::parse(text.as_bytes()).expect("json"), "S-1", None);
        assert_eq!(
            s.open(sealed.get("sealed").expect("sealed"), "S-1").expect("opens"),
            r#"{"id_number":"330723199005060038","name":"张三丰"}"#.as_bytes()
        );
        assert_eq!(sealed.get("applicant").and_then(|a| a.get("id_number")), Some(&Node::Null));
        assert_eq!(sealed.get("applicant").and_then(|a| a.get("name")).and_then(Json::as_str), Some("张**"));
    }

    /// Sealed fields open only in the record they were sealed for: moved
    /// into another claim's record, with or without the claim's text, they
    /// do not open.
    #[test]
    fn a_seal_is_bound_to_its_records_claim_id() {
        let s = Sealer::new("secret");
        let claim = |id: &str, number: &str| serde_json::json!({"claim_id": id, "applicant": {"id_number": number, "name": "张三丰"}});
        let (a, b) = (claim("S-1", "330723199005060038"), claim("S-2", "330723198001010011"));
        let (sealed_a, sealed_b) = (s.seal_claim(&a, None), s.seal_claim(&b, None));
        assert_eq!(sealed_a["sealed"]["bound"], "claim_id");
        assert_eq!(unseal_in(&s, &sealed_b, "S-2").expect("opens"), b);
        let mut swapped = sealed_b.clone();
        swapped["sealed"] = sealed_a["sealed"].clone();
        let err = unseal_in(&s, &swapped, "S-2").expect_err("another claim's seal");
        assert!(err.to_string().contains("do not open"), "{err}");
        assert!(unseal_in(&s, &sealed_a, "S-2").is_err(), "claim S-1 whole, in the record of S-2");
        let mut unmarked = sealed_a.clone();
        unmarked["sealed"].as_object_mut().unwrap().remove("bound");
        assert!(unseal_in(&s, &unmarked, "S-1").is_err(), "the mark taken away: opened unbound, it fails");
        let mut other = sealed_a;
        other["sealed"]["bound"] = "person".into();
        assert!(unseal_in(&s, &other, "S-1").expect_err("unknown").to_string().contains("does not know"));
    }

    /// A claim sealed by the earlier implementation (the `chacha20poly1305`
    /// crate) opens: stores written before keep their meaning.
    #[test]
    fn a_claim_sealed_by_the_earlier_implementation_opens() {
        let stored: serde_json::Value = serde_json::from_str(concat!(
            r#"{"applicant":{"id_number":"330723********0038","local_hukou":true,"name":"张**"},"claim_id":"S-1","#,
            r#""sealed":{"alg":"chacha20poly1305","data":"82845a73a2d7c5196c78a6260b3c79ff12f3ed8b05611b3716ba246eb5"#,
            r#"32c989f09e60410a02edc79957cedda94aaa3cb451b9dd19a29c095fc0484b0336f7977ad92746b1","#,
            r#""nonce":"5cfb934246c1e226e0158063"}}"#
        ))
        .unwrap();
        let body = serde_json::json!({
            "claim_id": "S-1",
            "applicant": {"id_number": "330723199005060038", "name": "张三丰", "local_hukou": true}
        });
        assert_eq!(unseal(&Sealer::new("secret"), &stored).expect("opens"), body);
        assert!(unseal(&Sealer::new("another"), &stored).is_err(), "another secret does not open");
        let mut bent = stored.clone();
        bent["sealed"]["nonce"] = "5cfb934246c1e226e015806".into();
        assert!(unseal(&Sealer::new("secret"), &bent).is_err(), "an odd-length nonce is refused");
        bent["sealed"]["nonce"] = "5cfb934246c1e226e01580".into();
        assert!(unseal(&Sealer::new("secret"), &bent).is_err(), "an 11-byte nonce is refused");
        bent["sealed"]["nonce"] = "5cfb934246c1e226e0158064".into();
        assert!(unseal(&Sealer::new("secret"), &bent).is_err(), "another nonce does not open");
    }

    #[test]
    fn a_body_hash_is_keyed_and_a_v1_plain_hash_still_matches() {
        let body = serde_json::json!({"claim_id": "S-1", "applicant": {"id_number": "330723199005060038"}});
        let reordered: serde_json::Value =
            serde_json::from_str(r#"{"applicant": {"id_number": "330723199005060038"}, "claim_id": "S-1"}"#).unwrap();
        let p = Pseudonymizer::new("secret");
        let h = p.body_hashes(&body);
        assert!(h.keyed.starts_with("hmac:"));
        assert_eq!(h.plain, crate::domain::body_hash(&body));
        assert!(h.matches(&h.keyed) && h.matches(&h.plain));
        assert!(p.body_hashes(&reordered).matches(&h.keyed), "key order is not a different body");
        assert!(!Pseudonymizer::new("other").body_hashes(&body).matches(&h.keyed), "the hash depends on the secret");
        let other = serde_json::json!({"claim_id": "S-2"});
        assert!(!p.body_hashes(&other).matches(&h.keyed) && !p.body_hashes(&other).matches(&h.plain));
    }
}
