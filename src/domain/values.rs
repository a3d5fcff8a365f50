//! The scalar values of a request: each type holds its own limits, which
//! both its reader and its schema use, so a limit is written once.

use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::read::{keep, string_at};
use super::{ClaimId, CreditCode, FieldError, FromJson, IdNumber, IndustryCode, Json, Money, OccupationCode};

/// A string schema: its pattern, length bounds, example and description.
pub fn string_schema(
    description: &str,
    pattern: Option<&str>,
    length: Option<(usize, usize)>,
    example: &str,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(pattern)
        .min_length(length.map(|l| l.0))
        .max_length(length.map(|l| l.1))
        .examples([example])
        .into()
}

/// Reads and documents a type whose `parse(&str, at)` checks it.
macro_rules! parsed_string {
    ($t:ty, $description:literal, $pattern:expr, $example:literal) => {
        impl FromJson for $t {
            fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
                keep(string_at(v, at).and_then(|s| <$t>::parse(s, at)), errs)
            }
        }
        string_type!($t, $description, $pattern, $example);
    };
}

/// Documents a type read from a JSON string.
macro_rules! string_type {
    ($t:ty, $description:literal, $pattern:expr, $example:literal) => {
        impl PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                string_schema($description, $pattern, None, $example)
            }
        }
        impl ToSchema for $t {}
    };
}

parsed_string!(
    ClaimId,
    "Caller-chosen claim id, unique per claim: 1..64 of `A-Z a-z 0-9 . _ : -`. It must not hold a resident ID \
     number (18 characters with a real birth date and the right check character): claim ids are shown in URLs \
     and logs.",
    Some("^[A-Za-z0-9._:-]{1,64}$"),
    "WY-2020-PX-000123"
);
parsed_string!(
    IdNumber,
    "Resident ID number: 18 characters, a real birth date and the GB 11643-1999 check digit (a lower-case x \
     is read as X). A claim's applicant is born on or before the claim's `event_date`. Personal data.",
    Some("^[0-9]{17}[0-9Xx]$"),
    "330723199005061233"
);
parsed_string!(
    CreditCode,
    "Unified social credit code, GB 32100-2015 (18 characters, check character last; lower-case letters are \
     read as capitals).",
    Some("^[0-9A-HJ-NPQRTUWXYa-hj-npqrtuwxy]{18}$"),
    "91330723MA00000156"
);
parsed_string!(
    OccupationCode,
    "Occupation code of the national occupational classification, `D-DD-DD-DD`.",
    Some("^[0-9]-[0-9]{2}-[0-9]{2}-[0-9]{2}$"),
    "6-31-01-03"
);
parsed_string!(
    IndustryCode,
    "Industry code, GB/T 4754: a section letter A-T and up to 4 digits.",
    Some("^[A-T][0-9]{0,4}$"),
    "C3311"
);
/// Money is a decimal string; a JSON number is refused saying why.
impl FromJson for Money {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        let money = match (v.as_str(), v.as_number()) {
            (Some(s), _) => Money::parse(s, at),
            (_, Some(_)) => Err(FieldError::new(
                at,
                "invalid_type",
                "money is a decimal string such as \"500.00\", not a JSON number",
            )),
            _ => Err(FieldError::new(at, "invalid_type", "money is a decimal string such as \"500.00\"")),
        };
        keep(money, errs)
    }
}

string_type!(
    Money,
    "An amount of CNY: a decimal string, at least 0, at most 2 decimal places (never a JSON number, which \
     would pass through a binary float).",
    Some(&Money::pattern()),
    "1300.00"
);

/// Free text: not blank, and at most as many characters as the type allows.
macro_rules! bounded_text {
    ($description:literal $name:ident, $max:literal, $example:literal) => {
        #[doc = $description]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_CHARS: usize = $max;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl FromJson for $name {
            fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
                keep(string_at(v, at).and_then(|s| read_text(s, at, Self::MAX_CHARS)).map(Self), errs)
            }
        }

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                let description = concat!($description, " Not blank, at most ", $max, " characters.");
                string_schema(description, Some("\\S"), Some((1, Self::MAX_CHARS)), $example)
            }
        }
        impl ToSchema for $name {}
    };
}

/// Whitespace as the schema's `\S` reads it (ECMA-262, which JSON Schema
/// patterns follow): Unicode's White_Space but U+0085, and U+FEFF besides.
fn ecma_whitespace(c: char) -> bool {
    c == '\u{feff}' || (c.is_whitespace() && c != '\u{85}')
}

fn read_text(s: &str, at: &str, max: usize) -> Result<String, FieldError> {
    if s.chars().all(ecma_whitespace) {
        Err(FieldError::new(at, "required", "must not be empty"))
    } else if s.chars().count() > max {
        Err(FieldError::new(at, "out_of_range", format!("at most {max} characters")))
    } else {
        Ok(s.to_string())
    }
}

bounded_text!("Text such as a certificate number or a name." Text, 200, "ZS-0001");
bounded_text!(
    "Why a grant is withdrawn (e.g. an objection during the public notice 公示)."
    RevocationReason, 500, "公示期间收到异议，经核实不符合条件"
);

/// A department code of the county's plan (`GET /v1/policies/{county}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DepartmentCode(String);

impl DepartmentCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromJson for DepartmentCode {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        let code = Text::from_json(v, at, errs)?;
        let ok = code.len() <= 64 && code.bytes().all(|c| c.is_ascii_lowercase() || c == b'_' || c.is_ascii_digit());
        if !ok {
            errs.push(FieldError::new(at, "invalid_value", "a department code such as human_resources"));
        }
        ok.then(|| Self(code.as_str().to_string()))
    }
}

impl PartialSchema for DepartmentCode {
    fn schema() -> RefOr<Schema> {
        string_schema(
            "A department code of the county's plan (`GET /v1/policies/{county}`).",
            Some("^[a-z0-9_]{1,64}$"),
            None,
            "human_resources",
        )
    }
}
impl ToSchema for DepartmentCode {}

/// The whole number a JSON number spells, `5.0` included (JSON Schema counts
/// it as an integer); read from its text, never through a float.
pub fn whole_number(number: &serde_json::Number) -> Option<i64> {
    number.as_i64().or_else(|| {
        let d: Decimal = number.to_string().parse().ok()?;
        d.fract().is_zero().then(|| i64::try_from(d).ok()).flatten()
    })
}

/// Whole numbers with bounds: the type is the bound.
#[macro_export]
macro_rules! bounded_whole {
    ($description:literal $name:ident($inner:ty), $min:literal..=$max:literal) => {
        #[doc = $description]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name($inner);

        impl $name {
            pub const MIN: $inner = $min;
            pub const MAX: $inner = $max;

            pub fn get(self) -> $inner {
                self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl $crate::domain::FromJson for $name {
            fn from_json<J: $crate::domain::Json>(
                v: &J,
                at: &str,
                errs: &mut Vec<$crate::domain::FieldError>,
            ) -> Option<Self> {
                use $crate::domain::FieldError;
                let range = || format!("must be a whole number from {} to {}", $min, $max);
                let Some(number) = $crate::domain::Json::as_number(v) else {
                    errs.push(FieldError::new(at, "invalid_type", "must be a whole number"));
                    return None;
                };
                match $crate::domain::whole_number(number).and_then(|n| <$inner>::try_from(n).ok()) {
                    Some(n) if (Self::MIN..=Self::MAX).contains(&n) => Some(Self(n)),
                    _ => {
                        errs.push(FieldError::new(at, "out_of_range", range()));
                        None
                    }
                }
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer)
                    .description(Some($description))
                    .minimum(Some($min))
                    .maximum(Some($max))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

bounded_whole!(
    "A calendar, training or school year."
    Year(i32), 1900..=2100
);
bounded_whole!(
    "Class hours of a project-training course."
    ClassHours(u32), 1..=10_000
);
bounded_whole!(
    "Trainees in the class."
    ClassSize(u32), 1..=100_000
);
bounded_whole!(
    "Months of apprentice allowance within one training year."
    Months(u32), 1..=12
);
bounded_whole!(
    "Trainees of an online training period."
    Trainees(u32), 1..=1_000_000
);
bounded_whole!(
    "Days of training attended."
    TrainingDays(u32), 1..=366
);

/// Hours as a JSON number with at most 2 decimal places, read from the
/// number's text (never through arithmetic on a float).
macro_rules! bounded_hours {
    ($description:literal $name:ident, $min:literal..=$max:literal) => {
        #[doc = $description]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
        pub struct $name(Decimal);

        impl $name {
            pub fn get(self) -> Decimal {
                self.0
            }
        }

        impl FromJson for $name {
            fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
                keep(read_hours(v, at, Decimal::from($min), Decimal::from($max)).map(Self), errs)
            }
        }

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .description(Some(concat!(
                        $description,
                        " A JSON number with at most 2 decimal places (read from its text, never as a float)."
                    )))
                    .minimum(Some($min))
                    .maximum(Some($max))
                    .into()
            }
        }
        impl ToSchema for $name {}
    };
}

fn read_hours<J: Json>(v: &J, at: &str, min: Decimal, max: Decimal) -> Result<Decimal, FieldError> {
    let Some(n) = v.as_number() else {
        return Err(FieldError::new(at, "invalid_type", "must be a number of hours"));
    };
    let h: Decimal =
        n.to_string().parse().map_err(|_| FieldError::new(at, "invalid_format", "hours such as 4 or 3.5"))?;
    if h.scale() > 2 {
        return Err(FieldError::new(at, "invalid_format", "hours have at most 2 decimal places"));
    }
    if h < min || h > max {
        return Err(FieldError::new(at, "out_of_range", format!("from {min} to {max} hours")));
    }
    Ok(h)
}

bounded_hours!(
    "Class hours of one training day (halves and quarters allowed, e.g. 3.5)."
    DayHours, 1..=24
);
bounded_hours!(
    "Hours repeating an earlier subsidised period's courseware (deducted in proportion)."
    RepeatedHours, 0..=100_000
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn read<T: FromJson>(v: Value) -> Result<T, Vec<FieldError>> {
        let mut errs = Vec::new();
        T::from_json(&v, "/f", &mut errs).ok_or(errs)
    }

    #[test]
    fn bounds_are_those_of_the_type() {
        assert_eq!(read::<Months>(json!(12)).unwrap().get(), 12);
        assert_eq!(read::<Months>(json!(5.0)).unwrap().get(), 5);
        assert_eq!(read::<Months>(json!(13)).unwrap_err()[0].code, "out_of_range");
        assert_eq!(read::<Months>(json!(0)).unwrap_err()[0].code, "out_of_range");
        assert_eq!(read::<Months>(json!(-1)).unwrap_err()[0].code, "out_of_range");
        assert_eq!(read::<Months>(json!(1.5)).unwrap_err()[0].code, "out_of_range");
        assert_eq!(read::<Months>(json!("3")).unwrap_err()[0].code, "invalid_type");
        assert_eq!(read::<Year>(json!(2100)).unwrap().get(), 2100);
        assert!(read::<Year>(json!(2101)).is_err());
    }

    #[test]
    fn hours_are_exact_with_two_places() {
        assert_eq!(read::<DayHours>(json!(3.5)).unwrap().get(), Decimal::new(35, 1));
        assert_eq!(read::<DayHours>(json!(3.25)).unwrap().get(), Decimal::new(325, 2));
        assert_eq!(read::<DayHours>(json!(3.125)).unwrap_err()[0].code, "invalid_format");
        assert_eq!(read::<DayHours>(json!(25)).unwrap_err()[0].code, "out_of_range");
        assert_eq!(read::<DayHours>(json!(24.01)).unwrap_err()[0].code, "out_of_range");
        assert_eq!(read::<DayHours>(json!(0.99)).unwrap_err()[0].code, "out_of_range");
        // Both bounds are hours a day may have.
        assert_eq!(read::<DayHours>(json!(24)).unwrap().get(), Decimal::from(24));
        assert_eq!(read::<DayHours>(json!(1)).unwrap().get(), Decimal::ONE);
        assert_eq!(read::<RepeatedHours>(json!(0)).unwrap().get(), Decimal::ZERO);
        assert_eq!(read::<RepeatedHours>(json!(100_000)).unwrap().get(), Decimal::from(100_000));
    }

    #[test]
    fn text_is_not_blank_and_bounded() {
        assert_eq!(read::<Text>(json!("  ")).unwrap_err()[0].code, "required");
        assert_eq!(read::<Text>(json!("字".repeat(200))).unwrap().chars().count(), 200);
        assert_eq!(read::<Text>(json!("字".repeat(201))).unwrap_err()[0].code, "out_of_range");
        assert_eq!(read::<DepartmentCode>(json!("Human")).unwrap_err()[0].code, "invalid_value");
    }

    /// The pattern a type's schema documents, compiled once, and what the
    /// type's reader must keep to.
    struct Documented<T> {
        pattern: String,
        regex: regex::Regex,
        reader: std::marker::PhantomData<T>,
    }

    impl<T: FromJson + PartialSchema> Documented<T> {
        fn new() -> Self {
            let schema = serde_json::to_value(T::schema()).unwrap();
            let pattern = schema["pattern"].as_str().expect("a pattern").to_string();
            let regex = regex::Regex::new(&pattern).unwrap();
            Self { pattern, regex, reader: std::marker::PhantomData }
        }

        /// Every string the pattern (anchored at both ends) matches.
        fn strings() -> proptest::string::RegexGeneratorStrategy<String> {
            let pattern = Self::new().pattern;
            let inner = pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$')).expect("an anchored pattern");
            proptest::string::string_regex(inner).unwrap()
        }

        /// Whether the reader accepts `s`; an accepted string must match the
        /// documented pattern, so a client validating against the OpenAPI
        /// document never refuses what the service would take.
        fn accepts(&self, s: &str) -> Result<bool, proptest::test_runner::TestCaseError> {
            let accepted = read::<T>(json!(s)).is_ok();
            proptest::prop_assert!(!accepted || self.regex.is_match(s), "{s:?} accepted, outside {}", self.pattern);
            Ok(accepted)
        }
    }

    proptest::proptest! {
        #[test]
        fn money_takes_exactly_its_pattern(
            good in Documented::<Money>::strings(),
            near in "[ +-]?[0-9]{0,11}(\\.[0-9]{0,3})?[ ]?",
        ) {
            let money = Documented::<Money>::new();
            proptest::prop_assert!(money.accepts(&good)?, "{good:?} refused");
            money.accepts(&near)?;
        }

        #[test]
        fn id_numbers_take_exactly_their_pattern(
            (year, month, day, serial) in (1900u32..2030, 1u32..13, 1u32..29, 0u32..1000),
            near in "[ ]?[0-9]{16,18}[0-9Xx]?[ ]?",
        ) {
            let ids = Documented::<IdNumber>::new();
            let id = IdNumber::complete(&format!("330723{year:04}{month:02}{day:02}{serial:03}")).unwrap();
            proptest::prop_assert!(ids.accepts(&id)?, "{id:?} refused");
            proptest::prop_assert!(ids.accepts(&id.to_lowercase())?, "lower case refused");
            let (before, after) = (format!(" {id}"), format!("{id} "));
            proptest::prop_assert!(!ids.accepts(&before)? && !ids.accepts(&after)?, "space taken");
            ids.accepts(&near)?;
        }

        #[test]
        fn credit_codes_take_exactly_their_pattern(
            first17 in "[0-9A-HJ-NPQRTUWXY]{17}",
            near in "[ ]?[0-9A-Za-z]{17,19}[ ]?",
        ) {
            let codes = Documented::<CreditCode>::new();
            // Exactly one of the 31 check characters completes 17 characters.
            let mut valid = Vec::new();
            for &check in super::super::codes::USCC_CHARS {
                let code = format!("{first17}{}", char::from(check));
                if codes.accepts(&code)? {
                    valid.push(code);
                }
            }
            proptest::prop_assert_eq!(valid.len(), 1);
            proptest::prop_assert!(codes.accepts(&valid[0].to_lowercase())?, "lower case refused");
            let spaced = format!(" {}", valid[0]);
            proptest::prop_assert!(!codes.accepts(&spaced)?, "space taken");
            codes.accepts(&near)?;
        }

        #[test]
        fn codes_and_claim_ids_take_exactly_their_patterns(
            occupation in Documented::<OccupationCode>::strings(),
            industry in Documented::<IndustryCode>::strings(),
            claim in Documented::<ClaimId>::strings(),
            department in Documented::<DepartmentCode>::strings(),
            near in "[ ]?[0-9A-Za-z._:-]{0,12}[ ]?",
        ) {
            let occupations = Documented::<OccupationCode>::new();
            let industries = Documented::<IndustryCode>::new();
            let claims = Documented::<ClaimId>::new();
            let departments = Documented::<DepartmentCode>::new();
            proptest::prop_assert!(occupations.accepts(&occupation)?, "{occupation:?} refused");
            proptest::prop_assert!(industries.accepts(&industry)?, "{industry:?} refused");
            proptest::prop_assert!(claims.accepts(&claim)?, "{claim:?} refused");
            proptest::prop_assert!(departments.accepts(&department)?, "{department:?} refused");
            for s in [&near, &near.to_lowercase()] {
                occupations.accepts(s)?;
                industries.accepts(s)?;
                claims.accepts(s)?;
                departments.accepts(s)?;
            }
        }
    }

    #[test]
    fn blank_text_is_what_the_schema_calls_blank() {
        // `\S` is ECMA-262's: U+0085 is not whitespace there, U+FEFF is.
        assert!(read::<Text>(json!("\u{85}")).is_ok());
        assert_eq!(read::<Text>(json!("\u{feff}")).unwrap_err()[0].code, "required");
        for blank in ["", " ", "\t\n\r", "\u{3000}", "\u{a0}\u{2028}"] {
            assert_eq!(read::<Text>(json!(blank)).unwrap_err()[0].code, "required", "{blank:?}");
        }
        assert_eq!(serde_json::to_value(Text::schema()).unwrap()["pattern"], json!("\\S"));
    }

    #[test]
    fn a_schema_carries_the_bounds_and_the_doc_comment() {
        let schema = serde_json::to_value(Months::schema()).unwrap();
        assert_eq!(schema["minimum"], json!(1));
        assert_eq!(schema["maximum"], json!(12));
        assert_eq!(schema["description"], json!("Months of apprentice allowance within one training year."));
    }
}
