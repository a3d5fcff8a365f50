//! What the ledger stores: claim records (layout v2), events, directories,
//! and the codec they share. A claim record is its own versioned type: a
//! small binary header (what start-up, listings and the materialised state
//! need) followed by the compressed body (the decision and the claim as
//! submitted, personal fields sealed).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::keys::KeyDigest;
use crate::domain::{County, Kind, Node};
use crate::rules::{Decision, Directory, Status};

/// The first byte of a layout-v2 claim record.
const RECORD_V2: u8 = 2;

/// What a recorded claim holds in the ledger while granted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holdings {
    /// The usage counter it counts against (a person's year).
    pub count: Option<KeyDigest>,
    /// Unique keys taken.
    pub keys: Vec<KeyDigest>,
    /// Running totals raised, with the amount.
    pub totals: Vec<(KeyDigest, Decimal)>,
}

/// The part of a record read without decompressing it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordHeader {
    pub claim_id: String,
    pub status: Status,
    pub county: County,
    pub kind: Kind,
    pub event_date: NaiveDate,
    pub department: Option<String>,
    /// The amount granted (zero unless approved; kept when revoked).
    pub granted: Decimal,
    /// Credit codes of the institution and organisation on the claim.
    pub parties: Vec<String>,
    /// Sequence number of the claim's `decided` event.
    pub decided_event: u64,
    pub holdings: Holdings,
}

impl RecordHeader {
    pub fn visible_to(&self, scope: Option<&str>) -> bool {
        scope.is_none_or(|cc| self.parties.iter().any(|p| p == cc))
    }

    pub fn year(&self) -> i32 {
        self.event_date.year()
    }
}

/// The header as encoded (postcard): plain integers and bytes only.
#[derive(Serialize, Deserialize)]
struct WireHeader {
    claim_id: String,
    status: Status,
    county: County,
    kind: Kind,
    event_day: i32,
    department: Option<String>,
    granted: [u8; 16],
    parties: Vec<String>,
    decided_event: u64,
    count: Option<KeyDigest>,
    keys: Vec<KeyDigest>,
    totals: Vec<(KeyDigest, [u8; 16])>,
}

/// A header as stored: the layout's first byte, then the header in postcard.
fn encode_header(h: &RecordHeader) -> Vec<u8> {
    let wire = WireHeader {
        claim_id: h.claim_id.clone(),
        status: h.status,
        county: h.county,
        kind: h.kind,
        event_day: h.event_date.num_days_from_ce(),
        department: h.department.clone(),
        granted: h.granted.serialize(),
        parties: h.parties.clone(),
        decided_event: h.decided_event,
        count: h.holdings.count,
        keys: h.holdings.keys.clone(),
        totals: h.holdings.totals.iter().map(|(k, v)| (*k, v.serialize())).collect(),
    };
    let mut head = vec![RECORD_V2];
    // Encoding plain values into a Vec cannot fail.
    head.extend_from_slice(&postcard::to_allocvec(&wire).unwrap_or_default());
    head
}

/// A header's event date, stored as days from the common era.
fn event_date(day: i32) -> anyhow::Result<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(day).context("a claim record's date is out of range")
}

/// The first fields of [`WireHeader`], in its order: postcard reads them and
/// leaves the rest of the header unread.
#[derive(Deserialize)]
struct WirePrefix<'a> {
    claim_id: &'a str,
    status: Status,
    county: County,
    /// Read only to get past it.
    _kind: Kind,
    event_day: i32,
}

/// The fields of a header a replay selects records by, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeaderPrefix<'a> {
    pub claim_id: &'a str,
    pub status: Status,
    pub county: County,
    pub event_date: NaiveDate,
}

/// The compressed part of a record, in two sections: the decision, and the
/// claim as submitted with who recorded it (encoded before the claim
/// reaches the writer, see [`ClaimPart::encode`]).
#[derive(Debug, Clone)]
pub struct RecordBody {
    pub decision: Decision,
    /// SHA-256 of the canonical body: the same claim id with another body conflicts.
    pub body_hash: String,
    /// The claim as submitted, ID number and name masked and sealed
    /// (`crate::privacy::Sealer`). Absent for claims moved from layout v1,
    /// which kept only the decision.
    pub submitted: Option<Value>,
    pub id_masked: Option<String>,
    /// The id (never the secret) of the API key that recorded it.
    pub recorded_by: String,
}

/// The claim section of a record body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClaimPart<S = Value> {
    pub body_hash: String,
    /// The claim as submitted, sealed: a [`Value`] as read back, or a
    /// [`crate::domain::Node`] of the request's text as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<S>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_masked: Option<String>,
    pub recorded_by: String,
}

impl<S: Serialize> ClaimPart<S> {
    /// The section as stored (compressed JSON).
    pub fn encode(&self) -> Vec<u8> {
        encode_record(self)
    }
}

impl ClaimPart {
    /// A section as stored.
    pub fn decode(section: &[u8]) -> anyhow::Result<Self> {
        decode_record(section).context("the claim section")
    }

    /// Only the claim as submitted of a section, read as a [`Node`]
    /// borrowed from `text`, the section's JSON text ([`record_text`]), and
    /// the body hash recorded with it; the rest is skipped unread.
    pub fn submitted_node(text: &[u8]) -> anyhow::Result<(Option<Node<'_>>, String)> {
        #[derive(Deserialize)]
        struct Submitted<'a> {
            body_hash: String,
            #[serde(default, borrow)]
            submitted: Option<Node<'a>>,
        }
        // The whole text is checked as UTF-8 once: serde_json then reads it
        // as a `str` and does not check each string again.
        let text = std::str::from_utf8(text).context("the claim section is not UTF-8")?;
        #[derive(Deserialize)]
        struct SubmittedValue {
            body_hash: String,
            #[serde(default)]
            submitted: Option<serde_json::Value>,
        }
        // `null` reads as absent (`None`), as for a `Value`. A claim holding
        // a number with a fraction is read as a `Value` (see `Node`'s reader).
        serde_json::from_str::<Submitted>(text)
            .map(|s| (s.submitted, s.body_hash))
            .or_else(|_| {
                serde_json::from_str::<SubmittedValue>(text).map(|s| (s.submitted.map(Node::from), s.body_hash))
            })
            .context("the claim section")
    }
}

/// A record as stored: its header and its body.
pub type EncodedRecord = (Vec<u8>, Vec<u8>);

/// A recorded claim (layout v2).
#[derive(Debug, Clone)]
pub struct ClaimRecord {
    /// Recording order, from 1, without gaps.
    pub seq: u64,
    pub header: RecordHeader,
    pub body: RecordBody,
    /// The claim section already encoded (a new claim's, made off the writer).
    pub claim_section: Option<std::sync::Arc<[u8]>>,
}

impl ClaimRecord {
    /// The `decided` event the record stands for (no separate event is stored).
    pub fn decided(&self) -> Event {
        Event {
            seq: self.header.decided_event,
            claim_id: self.header.claim_id.clone(),
            event: "decided".into(),
            at: self.body.decision.decided_at,
            key_id: self.body.recorded_by.clone(),
            // Only a granted claim can be revoked.
            status: match self.header.status {
                Status::Revoked => Status::Approved,
                s => s,
            },
            reason: None,
        }
    }

    /// The record as stored: its header and its body, under two keys of the
    /// same atomic write (start-up and listings read only the headers).
    pub fn encode(&self) -> EncodedRecord {
        self.encode_from_text().0
    }

    /// [`Self::encode`], and the decision's JSON text it was stored from (a
    /// new decision's answer is that text).
    pub fn encode_with_text(&self) -> (EncodedRecord, std::sync::Arc<[u8]>) {
        let (encoded, text) = self.encode_from_text();
        (encoded, text.into())
    }

    fn encode_from_text(&self) -> (EncodedRecord, Vec<u8>) {
        let head = encode_header(&self.header);
        // Serialising our own decision cannot fail.
        let text = serde_json::to_vec(&self.body.decision).unwrap_or_default();
        let decision = compress_text(&text);
        let decision = decision.as_deref().unwrap_or(&text);
        let claim: std::borrow::Cow<[u8]> = match &self.claim_section {
            Some(c) => std::borrow::Cow::Borrowed(c),
            None => std::borrow::Cow::Owned(
                ClaimPart {
                    body_hash: self.body.body_hash.clone(),
                    submitted: self.body.submitted.clone(),
                    id_masked: self.body.id_masked.clone(),
                    recorded_by: self.body.recorded_by.clone(),
                }
                .encode(),
            ),
        };
        let mut body = Vec::with_capacity(5 + decision.len() + claim.len());
        body.push(RECORD_V2);
        body.extend_from_slice(&(decision.len() as u32).to_le_bytes());
        body.extend_from_slice(decision);
        body.extend_from_slice(&claim);
        ((head, body), text)
    }

    /// The first fields of a stored header, borrowed from it: what a replay
    /// selects records by, read without the rest (no allocation).
    pub fn decode_header_prefix(v: &[u8]) -> anyhow::Result<HeaderPrefix<'_>> {
        let [RECORD_V2, head @ ..] = v else { bail!("not a layout-v2 record header") };
        let w: WirePrefix = postcard::from_bytes(head).context("decoding a claim record's header")?;
        let event_date = event_date(w.event_day)?;
        Ok(HeaderPrefix { claim_id: w.claim_id, status: w.status, county: w.county, event_date })
    }

    /// A stored header: no decompression.
    pub fn decode_header(v: &[u8]) -> anyhow::Result<RecordHeader> {
        let [RECORD_V2, head @ ..] = v else { bail!("not a layout-v2 record header") };
        let w: WireHeader = postcard::from_bytes(head).context("decoding a claim record's header")?;
        let event_date = event_date(w.event_day)?;
        Ok(RecordHeader {
            claim_id: w.claim_id,
            status: w.status,
            county: w.county,
            kind: w.kind,
            event_date,
            department: w.department,
            granted: Decimal::deserialize(w.granted),
            parties: w.parties,
            decided_event: w.decided_event,
            holdings: Holdings {
                count: w.count,
                keys: w.keys,
                totals: w.totals.into_iter().map(|(k, v)| (k, Decimal::deserialize(v))).collect(),
            },
        })
    }

    /// The claim section of a stored body, still encoded (the decision skipped).
    pub fn claim_section(seq: u64, body: &[u8]) -> anyhow::Result<&[u8]> {
        let [RECORD_V2, a, b, c, d, rest @ ..] = body else { bail!("record {seq}: not a layout-v2 body") };
        let dlen = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
        rest.get(dlen..).with_context(|| format!("record {seq}: the decision is cut short"))
    }

    pub fn decode(seq: u64, header: &[u8], body: &[u8]) -> anyhow::Result<Self> {
        let header = Self::decode_header(header).with_context(|| format!("record {seq}: the header"))?;
        let [RECORD_V2, a, b, c, d, rest @ ..] = body else { bail!("record {seq}: not a layout-v2 body") };
        let dlen = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
        if rest.len() < dlen {
            bail!("record {seq}: the decision is cut short");
        }
        let (decision, claim) = rest.split_at(dlen);
        let decision: Decision = decode_record(decision).with_context(|| format!("record {seq}: the decision"))?;
        let claim: ClaimPart = decode_record(claim).with_context(|| format!("record {seq}: the claim"))?;
        if decision.claim_id != header.claim_id {
            bail!("record {seq}: the header names claim {} but the decision {}", header.claim_id, decision.claim_id);
        }
        let body = RecordBody {
            decision,
            body_hash: claim.body_hash,
            submitted: claim.submitted,
            id_masked: claim.id_masked,
            recorded_by: claim.recorded_by,
        };
        Ok(Self { seq, header, body, claim_section: None })
    }
}

/// A claim record of layout v1 (a store written before v2, or its export):
/// read only to move it to v2.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LegacyClaim {
    pub decision: Decision,
    pub body_hash: String,
    pub effects: LegacyEffects,
    pub granted: Decimal,
    pub county: County,
    pub kind: Kind,
    pub event_date: NaiveDate,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub person: Option<String>,
    #[serde(default)]
    pub id_masked: Option<String>,
    #[serde(default)]
    pub parties: Vec<String>,
    pub seq: u64,
    pub recorded_by: String,
    #[serde(default)]
    pub decided_event: Option<u64>,
}

/// Layout v1's effects: keys as their canonical texts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LegacyEffects {
    #[serde(default)]
    pub count: Option<String>,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub totals: Vec<(String, Decimal)>,
}

/// One entry of a claim's append-only history.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub seq: u64,
    pub claim_id: String,
    /// `decided`, `replayed` or `revoked`.
    pub event: String,
    pub at: DateTime<Utc>,
    /// The id (never the secret) of the API key that acted.
    pub key_id: String,
    pub status: crate::rules::Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tally {
    pub count: u64,
    #[schema(value_type = String)]
    pub amount: Decimal,
}

/// Running totals of granted claims for a county and year (revocations subtract).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportTotals {
    pub by_kind: BTreeMap<Kind, Tally>,
    /// By department code; `unassigned` for claims that name none.
    pub by_department: BTreeMap<String, Tally>,
}

/// A stored trade-friction directory.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirectoryRecord {
    pub enterprises: Vec<DirectoryEntry>,
    pub updated_at: Option<DateTime<Utc>>,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectoryEntry {
    /// GB 32100-2015 unified social credit code.
    #[schema(pattern = "^[0-9A-HJ-NPQRTUWXY]{18}$", example = "91330723MA00000156")]
    pub credit_code: String,
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    pub listed_from: NaiveDate,
}

impl DirectoryRecord {
    pub fn empty() -> Self {
        Self::new(Vec::new(), None)
    }

    /// The version is the hash of the sorted entries: the same list, the same version.
    pub fn new(mut enterprises: Vec<DirectoryEntry>, updated_at: Option<DateTime<Utc>>) -> Self {
        use sha2::{Digest, Sha256};
        enterprises.sort_by(|a, b| a.credit_code.cmp(&b.credit_code));
        let canonical = serde_json::to_vec(&enterprises).unwrap_or_default();
        let version = format!("sha256:{}", faster_hex::hex_string(&Sha256::digest(&canonical)[..16]));
        Self { enterprises, updated_at, version }
    }

    pub fn to_directory(&self) -> Directory {
        Directory {
            version: self.version.clone(),
            listed: self.enterprises.iter().map(|e| (e.credit_code.clone(), e.listed_from)).collect(),
        }
    }
}

/// Marks a compressed record: `D`, the version of the dictionary it was
/// compressed with, the JSON's length (u32, little endian), then the zstd
/// frame. A record that starts with `{` is plain JSON.
const COMPRESSED: u8 = b'D';

/// The zstd dictionaries of claim records, by version (index + 1), trained
/// by `scripts/record-dictionary` on records of every kind. Records are small
/// and alike: a ~1.2 KB record compresses to ~750 B alone and to ~130–250 B
/// with the dictionary. A released version never changes (the records written
/// with it need it); a new one is appended and becomes current.
const DICTIONARIES: [&[u8]; 1] = [include_bytes!("records-v1.dict")];
const CURRENT: usize = DICTIONARIES.len();

/// zstd's level for new records. Below zero zstd leaves literals (the text
/// the dictionary does not cover) without Huffman coding: records are
/// somewhat larger, and compressing and decompressing them costs much less.
/// A reader needs only the dictionary, so records of every level read alike.
const LEVEL: i32 = -1;

struct Codec {
    compressor: zstd::bulk::Compressor<'static>,
    /// One per dictionary version.
    decompressors: Vec<zstd::bulk::Decompressor<'static>>,
}

thread_local! {
    static CODEC: std::cell::RefCell<Option<Codec>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's zstd contexts (created once, dictionaries loaded).
fn with_codec<R>(f: impl FnOnce(&mut Codec) -> std::io::Result<R>) -> std::io::Result<R> {
    CODEC.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(Codec {
                compressor: zstd::bulk::Compressor::with_dictionary(LEVEL, DICTIONARIES[CURRENT - 1])?,
                decompressors: DICTIONARIES
                    .iter()
                    .map(|d| zstd::bulk::Decompressor::with_dictionary(d))
                    .collect::<std::io::Result<_>>()?,
            });
        }
        match slot.as_mut() {
            Some(codec) => f(codec),
            None => Err(std::io::Error::other("zstd contexts missing")),
        }
    })
}

/// A claim or event record as stored: its JSON, compressed (at [`LEVEL`])
/// with the current dictionary.
pub(crate) fn encode_record<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising our own records cannot fail.
    let json = serde_json::to_vec(v).unwrap_or_default();
    match compress_text(&json) {
        Some(z) => z,
        None => json,
    }
}

/// A record's JSON text as stored when compressing it pays (`None`: stored
/// as it is).
fn compress_text(json: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(json.len()).ok()?;
    match with_codec(|c| c.compressor.compress(json)) {
        Ok(z) if z.len() + 6 < json.len() => {
            let mut out = Vec::with_capacity(z.len() + 6);
            out.push(COMPRESSED);
            out.push(CURRENT as u8);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&z);
            Some(out)
        }
        _ => None,
    }
}

pub(crate) fn decode_record<T: serde::de::DeserializeOwned>(v: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(&record_text(v)?).context("decoding a stored record")
}

/// A stored record's JSON text: decompressed, or the record itself when plain.
pub(crate) fn record_text(v: &[u8]) -> anyhow::Result<std::borrow::Cow<'_, [u8]>> {
    match v {
        [COMPRESSED, version, a, b, c, d, z @ ..] => {
            let len = u32::from_le_bytes([*a, *b, *c, *d]) as usize;
            let json = with_codec(|codec| {
                let dec = usize::from(*version)
                    .checked_sub(1)
                    .and_then(|i| codec.decompressors.get_mut(i))
                    .ok_or_else(|| std::io::Error::other(format!("unknown record dictionary {version}")))?;
                dec.decompress(z, len)
            })
            .context("decompressing a stored record")?;
            Ok(json.into())
        }
        _ => Ok(v.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_section_with_fractional_hours_reads_as_its_value() {
        let submitted = serde_json::json!({"claim_id": "C-1", "details": {"hours": [1.5, 2, 0.25]}, "n": null});
        let text = serde_json::json!({"submitted": submitted, "other": [1.25], "body_hash": "h"}).to_string();
        let (node, hash) = ClaimPart::submitted_node(text.as_bytes()).unwrap();
        assert_eq!(crate::domain::Json::to_value(&node.expect("the claim as submitted")), submitted);
        assert_eq!(hash, "h");
        let without = ClaimPart::submitted_node(br#"{"submitted":null,"x":0.5,"body_hash":"h"}"#).unwrap();
        assert!(without.0.is_none());
        assert!(ClaimPart::submitted_node(br#"{"submitted":{"a":1.5"#).is_err(), "cut short");
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct R {
        claim_id: String,
        note: String,
    }

    #[test]
    fn records_round_trip_compressed_or_plain_and_an_unknown_dictionary_is_an_error() {
        let r = R { claim_id: "C-1".into(), note: "资格培训补贴 qualification_training ".repeat(20) };
        let stored = encode_record(&r);
        assert_eq!(stored[..2], [COMPRESSED, CURRENT as u8]);
        assert!(stored.len() < serde_json::to_vec(&r).expect("json").len() / 2);
        assert_eq!(decode_record::<R>(&stored).expect("decoded"), r);
        // Too small to gain from compression: stored as plain JSON, read back as such.
        let small = R { claim_id: "C".into(), note: String::new() };
        assert_eq!(encode_record(&small)[0], b'{');
        assert_eq!(decode_record::<R>(&encode_record(&small)).expect("decoded"), small);
        let mut unknown = stored.clone();
        unknown[1] = 99;
        let err = decode_record::<R>(&unknown).expect_err("no such dictionary");
        assert!(format!("{err:#}").contains("unknown record dictionary 99"), "{err:#}");
    }

    /// A header holding something in every field.
    fn sample_header() -> RecordHeader {
        RecordHeader {
            claim_id: "WY-QT-2021-000123".into(),
            status: Status::Revoked,
            county: County::Changxing,
            kind: Kind::QualificationTraining,
            event_date: NaiveDate::from_ymd_opt(2021, 6, 30).expect("a date"),
            department: Some("人社局".into()),
            granted: Decimal::new(130000, 2),
            parties: vec!["91330723MA0EXMP02T".into(), "91330522MA0EXMP048".into()],
            decided_event: 77,
            holdings: Holdings {
                count: Some([1; 16]),
                keys: vec![[2; 16], [3; 16]],
                totals: vec![([4; 16], Decimal::new(55, 1))],
            },
        }
    }

    #[test]
    fn a_record_is_stored_from_its_decisions_text_and_reads_back_as_that_text() {
        let decision = crate::rules::sample_decision("approved");
        // The header as the decision has it (a record is read back only when they agree).
        let header = RecordHeader {
            claim_id: "C-1".into(),
            status: Status::Approved,
            county: County::Wuyi,
            event_date: NaiveDate::from_ymd_opt(2020, 6, 15).expect("a date"),
            ..sample_header()
        };
        let body =
            RecordBody { decision, body_hash: "h".into(), submitted: None, id_masked: None, recorded_by: "k".into() };
        let record = ClaimRecord { seq: 1, header, body, claim_section: None };
        let (stored, text) = record.encode_with_text();
        assert_eq!(record.encode(), stored);
        assert_eq!(text[..], serde_json::to_vec(&record.body.decision).expect("json")[..]);
        // The decision is stored as a decision always was: from its text, compressed.
        let len = u32::from_le_bytes(stored.1[1..5].try_into().expect("a length")) as usize;
        assert_eq!(stored.1[5..5 + len], encode_record(&record.body.decision)[..]);
        let read = ClaimRecord::decode(1, &stored.0, &stored.1).expect("a record");
        assert_eq!(serde_json::to_vec(&read.body.decision).expect("json")[..], text[..]);
    }

    #[test]
    fn a_header_reads_back_whole_and_its_prefix_alone_reads_the_same_fields() {
        let header = sample_header();
        let stored = encode_header(&header);
        assert_eq!(ClaimRecord::decode_header(&stored).expect("a header"), header);
        let prefix = ClaimRecord::decode_header_prefix(&stored).expect("a prefix");
        assert_eq!(
            prefix,
            HeaderPrefix {
                claim_id: "WY-QT-2021-000123",
                status: Status::Revoked,
                county: County::Changxing,
                event_date: header.event_date,
            }
        );
        assert!(ClaimRecord::decode_header_prefix(&stored[..4]).is_err(), "a header cut short");
        assert!(ClaimRecord::decode_header_prefix(&[1, 2, 3]).is_err(), "not a layout-v2 header");
    }
}
