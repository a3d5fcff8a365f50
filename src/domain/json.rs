//! The JSON the readers read: serde_json's [`Value`] (request bodies), or a
//! [`Node`] borrowed from a stored claim's text (replays), which costs far
//! less to build: its strings point into the text and its objects are small
//! sorted vectors, not maps of owned keys. The readers are generic over
//! [`Json`], so both are read by the same code with the same outcome.

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::{Number, Value};

/// What a reader asks of a JSON value.
pub trait Json: Sized {
    fn as_str(&self) -> Option<&str>;
    fn as_bool(&self) -> Option<bool>;
    fn as_number(&self) -> Option<&Number>;
    fn as_array(&self) -> Option<&[Self]>;
    fn is_null(&self) -> bool;
    fn is_object(&self) -> bool;
    /// The object's member `name` (`None` when absent or not an object).
    fn get(&self, name: &str) -> Option<&Self>;
    /// How many members the object has (0 when not an object).
    fn member_count(&self) -> usize;
    /// The object's member names, each once, in byte order (none when not an object).
    fn keys(&self) -> impl Iterator<Item = &str>;
    fn to_value(&self) -> Value;
}

impl Json for Value {
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn as_bool(&self) -> Option<bool> {
        Value::as_bool(self)
    }
    fn as_number(&self) -> Option<&Number> {
        match self {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&[Self]> {
        Value::as_array(self).map(Vec::as_slice)
    }
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }
    fn get(&self, name: &str) -> Option<&Self> {
        Value::get(self, name)
    }
    fn member_count(&self) -> usize {
        self.as_object().map_or(0, serde_json::Map::len)
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.as_object().into_iter().flat_map(|m| m.keys().map(String::as_str))
    }
    fn to_value(&self) -> Value {
        self.clone()
    }
}

/// A JSON value borrowed from its text where it can be. An object's members
/// are sorted by name and unique, the last of a repeated name kept: what a
/// [`Value`]'s map holds, so that both read the same.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// Reads JSON text (serde_json's parser: numbers, escapes and the depth
    /// limit as for a [`Value`]).
    pub fn parse(text: &'a [u8]) -> serde_json::Result<Self> {
        // The whole text is checked as UTF-8 once: serde_json then reads it
        // as a `str` and does not check each string again.
        let text = std::str::from_utf8(text).map_err(<serde_json::Error as de::Error>::custom)?;
        serde_json::from_str(text).or_else(|_| serde_json::from_str::<Value>(text).map(Node::from))
    }

    /// The member `name` of an object, taken out of it.
    pub fn remove(&mut self, name: &str) -> Option<Node<'a>> {
        let Node::Object(members) = self else { return None };
        let i = members.binary_search_by(|(k, _)| k.as_ref().cmp(name)).ok()?;
        Some(members.remove(i).1)
    }

    /// Sets the member `name` of an object (nothing when not an object).
    pub fn insert(&mut self, name: &str, value: Node<'a>) {
        let Node::Object(members) = self else { return };
        match members.binary_search_by(|(k, _)| k.as_ref().cmp(name)) {
            Ok(i) => members[i].1 = value,
            Err(i) => members.insert(i, (Cow::Owned(name.to_string()), value)),
        }
    }

    /// The member `name` of an object, to change in place.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Node<'a>> {
        let Node::Object(members) = self else { return None };
        let i = members.binary_search_by(|(k, _)| k.as_ref().cmp(name)).ok()?;
        Some(&mut members[i].1)
    }
}

impl Node<'_> {
    /// The same value, owning its text.
    pub fn into_owned(self) -> Node<'static> {
        let owned = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        match self {
            Node::Null => Node::Null,
            Node::Bool(b) => Node::Bool(b),
            Node::Number(n) => Node::Number(n),
            Node::String(s) => Node::String(owned(s)),
            Node::Array(a) => Node::Array(a.into_iter().map(Node::into_owned).collect()),
            Node::Object(m) => Node::Object(m.into_iter().map(|(k, v)| (owned(k), v.into_owned())).collect()),
        }
    }
}

impl From<Value> for Node<'static> {
    fn from(v: Value) -> Self {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) => Node::String(Cow::Owned(s)),
            Value::Array(a) => Node::Array(a.into_iter().map(Node::from).collect()),
            // A map's keys are already sorted and unique.
            Value::Object(m) => Node::Object(m.into_iter().map(|(k, v)| (Cow::Owned(k), Node::from(v))).collect()),
        }
    }
}

impl Json for Node<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Node::String(s) => Some(s),
            _ => None,
        }
    }
    fn as_bool(&self) -> Option<bool> {
        match self {
            Node::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn as_number(&self) -> Option<&Number> {
        match self {
            Node::Number(n) => Some(n),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&[Self]> {
        match self {
            Node::Array(a) => Some(a),
            _ => None,
        }
    }
    fn is_null(&self) -> bool {
        matches!(self, Node::Null)
    }
    fn is_object(&self) -> bool {
        matches!(self, Node::Object(_))
    }
    fn get(&self, name: &str) -> Option<&Self> {
        let Node::Object(members) = self else { return None };
        members.binary_search_by(|(k, _)| k.as_ref().cmp(name)).ok().map(|i| &members[i].1)
    }
    fn member_count(&self) -> usize {
        match self {
            Node::Object(m) => m.len(),
            _ => 0,
        }
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        let members = match self {
            Node::Object(m) => m.as_slice(),
            _ => &[],
        };
        members.iter().map(|(k, _)| k.as_ref())
    }
    fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::String(s) => Value::String(s.to_string()),
            Node::Array(a) => Value::Array(a.iter().map(Json::to_value).collect()),
            Node::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect()),
        }
    }
}

/// Written as the [`Value`] it reads as would be: members in name order,
/// numbers as serde_json writes them.
impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Number(n) => n.serialize(s),
            Node::String(x) => s.serialize_str(x),
            Node::Array(items) => s.collect_seq(items),
            Node::Object(members) => s.collect_map(members.iter().map(|(k, v)| (k.as_ref(), v))),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Node<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Node<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
                Ok(Node::Bool(b))
            }
            // Numbers as `Value` keeps them.
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(Node::Number(n.into()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(Node::Number(n.into()))
            }
            // A number with a fraction or an exponent is refused here:
            // serde_json hands it over only as a binary float. The readers of
            // whole texts ([`Node::parse`], the record's claim section) then
            // read that text as a `Value`, whose numbers serde_json keeps
            // itself, and convert it: the same node, read twice only when a
            // claim holds such a number (fractional hours).
            // serde_json hands a string over borrowed when it had no escapes,
            // else decoded into a scratch buffer.
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Node::String(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Node::String(Cow::Owned(s.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members: Vec<(Cow<'a, str>, Node<'a>)> = Vec::with_capacity(map.size_hint().unwrap_or(8));
                // A JSON object's names are strings, borrowed as other strings are.
                while let Some(name) = map.next_key::<Node<'a>>()? {
                    let Node::String(name) = name else {
                        return Err(de::Error::custom("a member name is not a string"));
                    };
                    members.push((name, map.next_value()?));
                }
                // Sorted by name, the last of a repeated name kept: the sort
                // is stable, and of two equal neighbours the later one's
                // value moves into the one kept.
                members.sort_by(|a, b| a.0.cmp(&b.0));
                members.dedup_by(|later, kept| {
                    let repeated = later.0 == kept.0;
                    if repeated {
                        std::mem::swap(&mut later.1, &mut kept.1);
                    }
                    repeated
                });
                Ok(Node::Object(members))
            }
        }
        // The visits serde_json's `deserialize_any` makes (never `visit_none`,
        // `visit_some` or `visit_string`).
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{canonical_body, parse_claim};

    #[test]
    fn what_no_json_text_holds_is_refused_naming_a_json_value() {
        use serde::de::value::{BytesDeserializer, Error};
        let refused = Node::deserialize(BytesDeserializer::<Error>::new(b"x")).unwrap_err();
        assert_eq!(refused.to_string(), "invalid type: byte array, expected any JSON value");
    }

    /// Every member and item of `v`, by JSON pointer.
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        let children: Vec<(String, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, x)| (format!("{at}/{k}"), x)).collect(),
            Value::Array(a) => a.iter().enumerate().map(|(i, x)| (format!("{at}/{i}"), x)).collect(),
            _ => return,
        };
        for (p, x) in children {
            out.push(p.clone());
            pointers(x, p, out);
        }
    }

    /// The same claim read from a `Value` and from a `Node` of its text.
    fn both(
        text: &[u8],
    ) -> (Result<String, Vec<crate::domain::FieldError>>, Result<String, Vec<crate::domain::FieldError>>) {
        let value: Value = serde_json::from_slice(text).expect("json");
        let node = Node::parse(text).expect("json");
        let debug = |c: crate::domain::Claim| format!("{c:?}");
        (parse_claim(&value).map(debug), parse_claim(&node).map(debug))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Valid claims of every shape, and claims with members replaced by
        /// values of other types, removed or added: the same claim or the
        /// same bad fields, in the same order.
        #[test]
        fn a_claim_reads_the_same_from_a_node_as_from_a_value(
            example in 0usize..21,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..14), 0..4),
        ) {
            let (_, mut claim) = crate::openapi::claim_examples().swap_remove(example);
            for (at, what) in edits {
                let mut all = Vec::new();
                pointers(&claim, String::new(), &mut all);
                let target = at.get(&all).clone();
                let (parent, name) = target.rsplit_once('/').expect("a pointer");
                let replacement = [
                    json!(null), json!(true), json!(5), json!(5.0), json!(-1), json!("x"), json!(""),
                    json!([]), json!({}), json!("2020-02-30"), json!("1000.005"), json!({"unknown": 1}),
                ];
                match (claim.pointer_mut(parent), what) {
                    (Some(Value::Object(m)), 12) => { m.remove(name); }
                    (Some(Value::Object(m)), 13) => { m.insert(format!("{name}_extra"), json!(1)); }
                    (Some(Value::Array(a)), 12 | 13) => { a.pop(); }
                    (Some(p), i) => { if let Some(x) = p.pointer_mut(&format!("/{name}")) { *x = replacement[i].clone(); } }
                    (None, _) => {}
                }
            }
            let text = serde_json::to_vec(&claim).expect("json");
            let (from_value, from_node) = both(&text);
            prop_assert_eq!(from_value, from_node);
            // The body hash of an evaluation (read as a `Node`) is that of the
            // recorded claim (read as a `Value`).
            let node = Node::parse(&text).expect("json");
            prop_assert_eq!(canonical_body(&node), canonical_body(&claim));
            // And it is written as the `Value` is (the claim as stored).
            prop_assert_eq!(serde_json::to_vec(&node).expect("json"), serde_json::to_vec(&claim).expect("json"));
        }
    }

    #[test]
    fn a_repeated_member_is_read_as_its_last_value_by_both() {
        let (_, claim) = crate::openapi::claim_examples().swap_remove(0);
        let text = claim.to_string();
        for repeated in [r#"{"kind":"no_such_kind","#, r#"{"zzz":1,"zzz":2,"#, r#"{"claim_id":"C-first","#] {
            let text = text.replacen('{', repeated, 1);
            let (from_value, from_node) = both(text.as_bytes());
            assert_eq!(from_value, from_node, "{text}");
        }
    }

    use serde_json::json;

    #[test]
    fn a_node_reads_as_the_value_of_the_same_text() {
        let texts = [
            r#"{"b":1,"a":[true,null,-2,3.5,"x\"y"],"c":{"z":"张三","y":{}},"a":"last"}"#,
            "[1e400]",
            r#"{"a":1,"b":0,"a":2,"a":3}"#,
            r#"[1, 18446744073709551615, -9223372036854775808, 0.1, "\u00e9"]"#,
            r#""plain""#,
            "null",
        ];
        for text in texts {
            let value: Result<Value, _> = serde_json::from_str(text);
            let node = Node::parse(text.as_bytes());
            match (value, node) {
                (Ok(v), Ok(n)) => {
                    assert_eq!(n.to_value(), v, "{text}");
                    assert_eq!(Node::from(v.clone()), n, "{text}");
                    assert_eq!(n.keys().collect::<Vec<_>>(), v.keys().collect::<Vec<_>>(), "{text}");
                    assert_eq!(canonical_body(&n), canonical_body(&v), "{text}");
                    assert_eq!(serde_json::to_string(&n).expect("json"), v.to_string(), "{text}");
                }
                (v, n) => assert_eq!(v.is_err(), n.is_err(), "{text}"),
            }
        }
    }

    #[test]
    fn unescaped_strings_are_borrowed_and_members_can_be_changed() {
        let text = br#"{"name":"plain","esc":"a\nb","o":{}}"#;
        let mut n = Node::parse(text).expect("json");
        assert!(matches!(n.get("name"), Some(Node::String(Cow::Borrowed("plain")))));
        assert!(matches!(n.get("esc"), Some(Node::String(Cow::Owned(s))) if s == "a\nb"));
        assert_eq!(n.remove("name"), Some(Node::String("plain".into())));
        assert_eq!(n.remove("name"), None);
        n.insert("aa", Node::Bool(true));
        n.insert("o", Node::Null);
        assert_eq!(n.keys().collect::<Vec<_>>(), ["aa", "esc", "o"]);
        assert_eq!(n.get("o"), Some(&Node::Null));
        if let Some(o) = n.get_mut("aa") {
            *o = Node::Bool(false);
        }
        assert_eq!(n.to_value(), serde_json::json!({"aa": false, "esc": "a\nb", "o": null}));
    }
}
