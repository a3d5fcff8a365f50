//! Reading a JSON body into typed request values. Every field is read and
//! every bad one reported by its JSON pointer; nothing stops at the first.
//!
//! A request type is declared once with [`request_type!`]: the same
//! declaration is the Rust type the rules use, the reader that fills it, and
//! (through `utoipa`) its schema in the OpenAPI document.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::json::Json;

/// One bad field of a request, named by its JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) to the field, e.g. `/applicant/id_number`.
    pub field: String,
    /// Stable code: `required`, `unknown_field`, `invalid_type`, `invalid_value`,
    /// `invalid_format`, `invalid_date`, `invalid_checksum`, `out_of_range`, `duplicate`.
    pub code: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &str, message: impl Into<String>) -> Self {
        Self { field: field.into(), code: code.to_string(), message: message.into() }
    }
}

/// A value read from the JSON at pointer `at`, reporting its own faults.
pub trait FromJson: Sized {
    /// The value, or `None` with the reasons pushed onto `errs`.
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self>;

    /// The value of an absent (or `null`) field; `None` makes the field required.
    fn absent() -> Option<Self> {
        None
    }
}

/// Keeps the value of a one-error parse, or records its error.
pub(crate) fn keep<T>(r: Result<T, FieldError>, errs: &mut Vec<FieldError>) -> Option<T> {
    r.map_err(|e| errs.push(e)).ok()
}

/// The string at `at`, or an `invalid_type` error.
pub(crate) fn string_at<'v, J: Json>(v: &'v J, at: &str) -> Result<&'v str, FieldError> {
    v.as_str().ok_or_else(|| FieldError::new(at, "invalid_type", "must be a string"))
}

/// `base/name` as a JSON pointer, escaping `~` and `/` in the name.
pub fn pointer(base: &str, name: &str) -> String {
    let mut at = String::with_capacity(base.len() + 1 + name.len());
    at.push_str(base);
    push_segment(&mut at, name);
    at
}

/// Appends `/name` to a JSON pointer, escaping `~` and `/` in the name.
fn push_segment(at: &mut String, name: &str) {
    at.push('/');
    if name.contains(['~', '/']) {
        at.push_str(&name.replace('~', "~0").replace('/', "~1"));
    } else {
        at.push_str(name);
    }
}

/// The fields of one JSON object. Fields read are remembered, so that
/// [`Fields::finish`] can report the rest as unknown.
pub struct Fields<'a, J: Json> {
    object: &'a J,
    base: &'a str,
    known: smallvec::SmallVec<[&'static str; 16]>,
    /// How many of the names read the object has.
    found: usize,
    /// The pointer of the field being read: `base` and the field's name, in
    /// one buffer for the whole object.
    at: String,
}

impl<'a, J: Json> Fields<'a, J> {
    /// The object at `at`, or `None` with an `invalid_type` error.
    pub fn new(v: &'a J, at: &'a str, errs: &mut Vec<FieldError>) -> Option<Self> {
        if !v.is_object() {
            errs.push(FieldError::new(at, "invalid_type", "must be an object"));
            return None;
        }
        let mut buffer = String::with_capacity(at.len() + 32);
        buffer.push_str(at);
        Some(Self { object: v, base: at, known: smallvec::SmallVec::new(), found: 0, at: buffer })
    }

    /// The field's JSON value, `null` counting as absent.
    pub fn raw(&mut self, name: &'static str) -> Option<&'a J> {
        debug_assert!(!self.known.contains(&name), "`{name}` read twice");
        self.known.push(name);
        let value = self.object.get(name);
        self.found += usize::from(value.is_some());
        value.filter(|v| !v.is_null())
    }

    /// Reads one field as `T`; an absent field is `T::absent()` or `required`.
    pub fn read<T: FromJson>(&mut self, name: &'static str, errs: &mut Vec<FieldError>) -> Option<T> {
        let value = self.raw(name);
        // A declared field's name needs no escaping in a pointer.
        debug_assert!(!name.contains(['~', '/']), "`{name}` needs escaping");
        self.at.truncate(self.base.len());
        self.at.push('/');
        self.at.push_str(name);
        match value {
            Some(v) => T::from_json(v, &self.at, errs),
            None => T::absent().or_else(|| {
                errs.push(FieldError::new(self.at.as_str(), "required", "this field is required"));
                None
            }),
        }
    }

    /// Reports every field not read: unknown, or not part of this shape.
    pub fn finish(self, errs: &mut Vec<FieldError>) {
        // Every member was read (names are read once each): none is unknown.
        if self.found == self.object.member_count() {
            return;
        }
        for name in self.object.keys() {
            if !self.known.contains(&name) {
                errs.push(FieldError::new(
                    pointer(self.base, name),
                    "unknown_field",
                    "this field is not part of this request",
                ));
            }
        }
    }
}

impl<T: FromJson> FromJson for Option<T> {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        T::from_json(v, at, errs).map(Some)
    }

    fn absent() -> Option<Self> {
        Some(None)
    }
}

/// An array, every bad item reported.
impl<T: FromJson> FromJson for Vec<T> {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        let Some(items) = v.as_array() else {
            errs.push(FieldError::new(at, "invalid_type", "must be an array"));
            return None;
        };
        let before = errs.len();
        // One pointer buffer for every item: the array's pointer, then the index.
        let mut item_at = String::with_capacity(at.len() + 4);
        item_at.push_str(at);
        item_at.push('/');
        let out: Vec<T> = items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                use std::fmt::Write as _;
                item_at.truncate(at.len() + 1);
                // Writing into a String cannot fail.
                let _ = write!(item_at, "{i}");
                T::from_json(item, &item_at, errs)
            })
            .collect();
        (errs.len() == before).then_some(out)
    }
}

/// Any JSON value but `null` (which reads as absent).
impl FromJson for Value {
    fn from_json<J: Json>(v: &J, _at: &str, _errs: &mut Vec<FieldError>) -> Option<Self> {
        Some(v.to_value())
    }
}

impl FromJson for bool {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        keep(v.as_bool().ok_or_else(|| FieldError::new(at, "invalid_type", "must be true or false")), errs)
    }
}

/// Exactly `YYYY-MM-DD` and a real day: no signs, spaces or one-digit months.
impl FromJson for NaiveDate {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        keep(parse_date(v, at), errs)
    }
}

fn parse_date<J: Json>(v: &J, at: &str) -> Result<NaiveDate, FieldError> {
    let s = v.as_str().ok_or_else(|| FieldError::new(at, "invalid_type", "must be a date string YYYY-MM-DD"))?;
    let invalid = || FieldError::new(at, "invalid_date", "must be a real date YYYY-MM-DD");
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    if !shaped {
        return Err(invalid());
    }
    let n = |r: std::ops::Range<usize>| super::digits_value(&b[r]);
    NaiveDate::from_ymd_opt(n(0..4) as i32, n(5..7), n(8..10)).ok_or_else(invalid)
}

/// Declares a request object once: the struct (with its schema) and its reader.
/// Fields are read in order; a field of type `Option<T>` may be absent.
#[macro_export]
macro_rules! request_type {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident : $ty:ty),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name { $($(#[$field_meta])* pub $field: $ty),+ }

        impl $crate::domain::FromJson for $name {
            fn from_json<J: $crate::domain::Json>(
                v: &J,
                at: &str,
                errs: &mut Vec<$crate::domain::FieldError>,
            ) -> Option<Self> {
                let mut fields = $crate::domain::Fields::new(v, at, errs)?;
                $(let $field = fields.read::<$ty>(stringify!($field), errs);)+
                fields.finish(errs);
                Some(Self { $($field: $field?),+ })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn date(v: Value) -> Result<NaiveDate, FieldError> {
        parse_date(&v, "/event_date")
    }

    #[test]
    fn dates_are_exactly_yyyy_mm_dd_and_real() {
        for bad in ["2020-1-01 ", "2020 -1-01", "2020-01-1 ", "2020-1-1  ", "+020-01-01", "2020-02-30", "2020/01/01"] {
            assert_eq!(date(json!(bad)).unwrap_err().code, "invalid_date", "{bad:?} was accepted");
        }
        assert_eq!(date(json!(20200101)).unwrap_err().code, "invalid_type");
        assert_eq!(date(json!("2020-02-29")).ok(), NaiveDate::from_ymd_opt(2020, 2, 29));
    }

    #[test]
    fn an_array_reports_every_bad_item() {
        let mut errs = Vec::new();
        assert_eq!(Vec::<bool>::from_json(&json!([true, 1, false, "x"]), "/a", &mut errs), None);
        let at: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(at, ["/a/1", "/a/3"]);
        assert_eq!(Vec::<bool>::from_json(&json!([true]), "/a", &mut errs), Some(vec![true]));
    }

    /// The unknown members of an object, read as a `Value` and as a `Node`,
    /// with `known` read first.
    fn unknown(v: Value, known: &[&'static str]) -> [Vec<String>; 2] {
        fn read<J: Json>(v: &J, known: &[&'static str]) -> Vec<String> {
            let mut errs = Vec::new();
            let mut fields = Fields::new(v, "", &mut errs).unwrap();
            for name in known {
                fields.raw(name);
            }
            fields.finish(&mut errs);
            errs.into_iter().map(|e| e.field).collect()
        }
        let text = v.to_string();
        [read(&v, known), read(&crate::domain::Node::parse(text.as_bytes()).unwrap(), known)]
    }

    #[test]
    fn every_member_not_read_is_unknown_and_none_when_all_were_read() {
        let none: Vec<String> = Vec::new();
        assert_eq!(unknown(json!({"a": 1, "b": null}), &["a", "b", "c"]), [none.clone(), none.clone()]);
        assert_eq!(unknown(json!({}), &[]), [none.clone(), none]);
        let x = vec!["/x".to_string()];
        assert_eq!(unknown(json!({"a": 1, "x": 2}), &["a"]), [x.clone(), x.clone()]);
        assert_eq!(unknown(json!({"a": 1, "x": 2}), &["a", "b"]), [x.clone(), x.clone()]);
        assert_eq!(unknown(json!({"x": 2}), &[]), [x.clone(), x]);
    }

    #[test]
    fn unknown_names_are_escaped_in_their_pointer() {
        let v = json!({"a/b": 1, "c~d": 2});
        let mut errs = Vec::new();
        Fields::new(&v, "/x", &mut errs).unwrap().finish(&mut errs);
        let mut at: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        at.sort();
        assert_eq!(at, ["/x/a~1b", "/x/c~0d"]);
    }
}
