//! Policy as data: every figure, date, list and table the rules use, loaded
//! from `config/policies/<county>/` and checked at start. Each value carries
//! its clause and, where it can change, the date it takes effect; values are
//! looked up by the claim's own date.

mod changxing;
mod wuyi;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

pub use changxing::{ChangxingRules, KINDS as CHANGXING_KINDS};
pub use wuyi::{WuyiRules, WyOnline, KINDS as WUYI_KINDS};

use crate::domain::{County, Group, Kind, Payee};

/// A non-negative decimal written as a string in the data files (never a float).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(pub Decimal);

/// Most digits before an amount's point and after it: 999,999,999.9999 at
/// most, which holds every figure and rate of the documents and keeps every
/// product and total the rules and a simulation make far inside a `Decimal`
/// (a simulation's changed figure is read as this type too).
const AMOUNT_WHOLE_DIGITS: usize = 9;
const AMOUNT_PLACES: usize = 4;

impl Amount {
    /// The schema's pattern, written from the limits the reader checks.
    fn pattern() -> String {
        format!("^[0-9]{{1,{AMOUNT_WHOLE_DIGITS}}}(\\.[0-9]{{1,{AMOUNT_PLACES}}})?$")
    }

    /// Reads exactly what [`Amount::pattern`] admits.
    fn parse(s: &str) -> Option<Self> {
        let (whole, places) = s.split_once('.').map_or((s, None), |(w, p)| (w, Some(p)));
        let digits =
            |part: &str, most: usize| (1..=most).contains(&part.len()) && part.bytes().all(|c| c.is_ascii_digit());
        let shaped = digits(whole, AMOUNT_WHOLE_DIGITS) && places.is_none_or(|p| digits(p, AMOUNT_PLACES));
        shaped.then(|| s.parse().ok().map(Self)).flatten()
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("amounts are quoted decimal strings such as \"1000\", never bare numbers")
        })?;
        Amount::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "malformed amount `{s}`: not negative, at most {AMOUNT_WHOLE_DIGITS} digits before the point and \
                 {AMOUNT_PLACES} after, such as \"1000\" or \"0.95\""
            ))
        })
    }
}

impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::domain::string_schema(
            "A non-negative decimal, quoted (an amount of CNY, a rate or a ratio).",
            Some(&Amount::pattern()),
            None,
            "1000",
        )
    }
}
impl utoipa::ToSchema for Amount {}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.normalize().to_string())
    }
}

/// One value of a parameter and the date it takes effect (`None`: from the
/// start of the document's period).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dated<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NaiveDate>,
    pub value: T,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
struct ParamRepr<T> {
    clause: String,
    #[serde(default)]
    value: Option<T>,
    #[serde(default)]
    from: Option<NaiveDate>,
    #[serde(default)]
    history: Option<Vec<Dated<T>>>,
    #[serde(default)]
    note: Option<String>,
}

/// A cited, dated parameter: `{ value = "1000", clause = "WY §4(1)1" }` or
/// `{ clause = "…", history = [{ from = …, value = … }, …] }`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Param<T> {
    pub clause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[schema(inline)]
    pub values: Vec<Dated<T>>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Param<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let r = ParamRepr::<T>::deserialize(d)?;
        if r.clause.trim().is_empty() {
            return Err(D::Error::custom("a value without a clause"));
        }
        let values = match (r.value, r.history) {
            (Some(value), None) => vec![Dated { from: r.from, value }],
            (None, Some(h)) if !h.is_empty() && r.from.is_none() => h,
            _ => return Err(D::Error::custom("give either `value` (optionally `from`) or a non-empty `history`")),
        };
        for w in values.windows(2) {
            match (w[0].from, w[1].from) {
                (None, Some(_)) => {}
                (Some(a), Some(b)) if a < b => {}
                _ => return Err(D::Error::custom("overlapping periods: history dates must be strictly increasing")),
            }
        }
        Ok(Param { clause: r.clause, note: r.note, values })
    }
}

/// A clause the rules cite for a check or a step that has no figure of its
/// own (a once-only rule, a refusal, a fee taken as paid):
/// `{ clause = "R-ONCE, WY §4(1)2" }`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Citation {
    pub clause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl<'de> Deserialize<'de> for Citation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Repr {
            clause: String,
            #[serde(default)]
            note: Option<String>,
        }
        let Repr { clause, note } = Repr::deserialize(d)?;
        if clause.trim().is_empty() {
            return Err(serde::de::Error::custom("a citation without a clause"));
        }
        Ok(Citation { clause, note })
    }
}

impl<T> Param<T> {
    /// The value in force on `day`.
    pub fn at(&self, day: NaiveDate) -> &T {
        self.values.iter().rev().find(|v| v.from.is_none_or(|f| f <= day)).unwrap_or(&self.values[0]).value_ref()
    }
}

impl<T> Dated<T> {
    fn value_ref(&self) -> &T {
        &self.value
    }
}

impl Param<Amount> {
    pub fn dec(&self, day: NaiveDate) -> Decimal {
        self.at(day).0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Short id used in clause references (`WY`, `CX`).
    pub id: String,
    pub county: County,
    pub number: String,
    pub title_zh: String,
    pub issuer_zh: String,
    pub issued: NaiveDate,
    pub admin_code: String,
    pub clause: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub clause: String,
}

/// A kind the document offers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KindEntry {
    pub clause: String,
    pub title_zh: String,
    /// Counts toward the yearly limit of R-ANNUAL.
    pub counts: bool,
    /// The payee; `None` when the claim names it (WY qualification training).
    #[serde(default)]
    pub payee: Option<Payee>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TradeFriction {
    pub rate: Param<Amount>,
    /// Last event date the uplift applies to.
    pub until: Param<NaiveDate>,
    /// Kinds whose standard is raised (I-9, I-12).
    pub kinds: Param<Vec<Kind>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Eligibility {
    /// Base-eligibility clause (WY §2(1); CX I-2).
    pub clause: String,
    /// CX §3(3): persons from a labour co-operation base outside the county are eligible.
    pub labour_cooperation_base_eligible: Param<bool>,
    /// Key training groups (CX §2(1), I-17).
    pub key_groups: Param<Vec<Group>>,
    /// 4050: women from this age, men from this age (I-17).
    pub age_4050_women: Param<u32>,
    pub age_4050_men: Param<u32>,
}

/// What both documents have in common.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Common {
    pub document: Document,
    pub period: Period,
    pub annual_limit: Param<u32>,
    pub trade_friction: TradeFriction,
    pub eligibility: Eligibility,
    /// Reason notices that follow a grant (WY §5: public notice 公示).
    pub public_notice: Param<Vec<Kind>>,
    /// R-CERT: one certificate backs at most one granted claim per county and kind.
    pub certificate_once: Citation,
    pub kinds: BTreeMap<Kind, KindEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub clause: String,
    pub title_zh: String,
    pub totals: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_2019_total: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Department {
    pub code: String,
    pub name_zh: String,
    pub task_zh: String,
    pub plans: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_2019: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partners_zh: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct School {
    pub seq: u32,
    pub name_zh: String,
    pub note_zh: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schools {
    pub clause: String,
    pub title_zh: String,
    pub entries: Vec<School>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub count: u32,
    pub clause: String,
}

/// Reference data of the attachments (RULES.md §6).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub plan: Plan,
    pub departments: Vec<Department>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schools: Option<Schools>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<BTreeMap<String, Target>>,
}

/// A county's rules parameters, shaped by its own document.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum CountyRules {
    Wuyi(Box<WuyiRules>),
    Changxing(Box<ChangxingRules>),
}

/// Everything loaded for one county.
#[derive(Debug, Clone, Serialize)]
pub struct CountyPolicy {
    pub common: Common,
    pub rules: CountyRules,
    pub reference: Reference,
    /// `sha256:` of the canonical loaded data; cited by every decision.
    pub version: String,
}

impl CountyPolicy {
    pub fn county(&self) -> County {
        self.common.document.county
    }

    pub fn department(&self, code: &str) -> Option<&Department> {
        self.reference.departments.iter().find(|d| d.code == code)
    }
}

/// The policy of every county.
#[derive(Debug, Clone)]
pub struct Policy {
    counties: BTreeMap<County, CountyPolicy>,
}

impl Policy {
    pub fn county(&self, c: County) -> &CountyPolicy {
        // Loading refuses a policy set without every county, so this cannot fail.
        &self.counties[&c]
    }

    pub fn counties(&self) -> impl Iterator<Item = &CountyPolicy> {
        self.counties.values()
    }

    /// Loads `dir/<county>/policy.toml` and `dir/<county>/reference.toml` for
    /// every county, refusing anything inconsistent.
    pub fn load(dir: &Path, epidemic_window_end: Option<NaiveDate>) -> anyhow::Result<Self> {
        if dir == Path::new(DEFAULT_DIR) && !dir.exists() {
            tracing::info!("no ./{DEFAULT_DIR}: using the policy data built into the binary");
            return Self::embedded(epidemic_window_end);
        }
        let mut counties = BTreeMap::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading policy directory {}", dir.display()))? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().to_string();
            let county = County::parse(&name)
                .with_context(|| format!("policy directory `{name}`: no rules module for this county"))?;
            let p = load_county(&entry.path(), county, epidemic_window_end)
                .with_context(|| format!("policy of {name} in {}", entry.path().display()))?;
            counties.insert(county, p);
        }
        for c in County::ALL {
            if !counties.contains_key(c) {
                bail!("no policy data for county `{c}` in {}", dir.display());
            }
        }
        Ok(Self { counties })
    }
}

/// The default policy directory (relative to the working directory).
pub const DEFAULT_DIR: &str = "config/policies";

/// The policy data of the repository, built into the binary: a binary run
/// outside the repository (or in a container without `config/`) uses it
/// when `./config/policies` does not exist.
const EMBEDDED: [(County, &str, &str); 2] = [
    (
        County::Wuyi,
        include_str!("../../config/policies/wuyi/policy.toml"),
        include_str!("../../config/policies/wuyi/reference.toml"),
    ),
    (
        County::Changxing,
        include_str!("../../config/policies/changxing/policy.toml"),
        include_str!("../../config/policies/changxing/reference.toml"),
    ),
];

impl Policy {
    /// The policy data built into the binary.
    pub fn embedded(epidemic_window_end: Option<NaiveDate>) -> anyhow::Result<Self> {
        let mut counties = BTreeMap::new();
        for (county, policy, reference) in EMBEDDED {
            let name = format!("built-in {county}");
            let p = county_from_text(&name, policy, reference, county, epidemic_window_end)
                .with_context(|| format!("policy of {name}"))?;
            counties.insert(county, p);
        }
        Ok(Self { counties })
    }
}

fn read_toml<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> anyhow::Result<T> {
    toml::from_str(text).with_context(|| format!("{name} is not valid"))
}

fn load_county(dir: &Path, county: County, epidemic_window_end: Option<NaiveDate>) -> anyhow::Result<CountyPolicy> {
    let read = |f: &str| {
        let path = dir.join(f);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let name = dir.display().to_string();
    county_from_text(&name, &read("policy.toml")?, &read("reference.toml")?, county, epidemic_window_end)
}

fn county_from_text(
    dir: &str,
    policy: &str,
    reference: &str,
    county: County,
    epidemic_window_end: Option<NaiveDate>,
) -> anyhow::Result<CountyPolicy> {
    let reference: Reference = read_toml(&format!("{dir}/reference.toml"), reference)?;
    let path = format!("{dir}/policy.toml");
    let mut table: toml::Table = read_toml(&path, policy)?;
    let rules_table = table.remove("rules").with_context(|| format!("{path}: no [rules] section"))?;
    let common: Common = table.try_into().with_context(|| format!("{path} is not valid"))?;
    let invalid = || format!("{path}: [rules] is not valid");
    let rules = match county {
        County::Wuyi => {
            let mut rules: WuyiRules = rules_table.try_into().with_context(invalid)?;
            if let Some(end) = epidemic_window_end {
                rules.override_window_end(end);
            }
            CountyRules::Wuyi(Box::new(rules))
        }
        County::Changxing => CountyRules::Changxing(Box::new(rules_table.try_into().with_context(invalid)?)),
    };
    CountyPolicy::assemble(county, common, rules, reference)
}

impl CountyPolicy {
    /// Checks loaded data and gives it its version: the SHA-256 of its
    /// canonical JSON ([`CountyPolicy::source`]).
    fn assemble(county: County, common: Common, rules: CountyRules, reference: Reference) -> anyhow::Result<Self> {
        check(county, &common, &rules, &reference)?;
        let mut p = CountyPolicy { common, rules, reference, version: String::new() };
        let canonical = serde_json::to_vec(&p.source())?;
        p.version = format!("sha256:{}", faster_hex::hex_string(&Sha256::digest(&canonical)));
        Ok(p)
    }

    /// The loaded data as one JSON document; it loads back as it is.
    fn source(&self) -> serde_json::Value {
        serde_json::json!({ "common": &self.common, "rules": &self.rules, "reference": &self.reference })
    }

    fn from_source(county: County, source: &serde_json::Value) -> anyhow::Result<Self> {
        let part = |k: &str| {
            let mut v = source.get(k).cloned().unwrap_or_default();
            as_data_file(&mut v);
            v
        };
        let common: Common = serde_json::from_value(part("common"))?;
        let rules = match county {
            County::Wuyi => CountyRules::Wuyi(Box::new(serde_json::from_value(part("rules"))?)),
            County::Changxing => CountyRules::Changxing(Box::new(serde_json::from_value(part("rules"))?)),
        };
        let reference: Reference = serde_json::from_value(part("reference"))?;
        Self::assemble(county, common, rules, reference)
    }

    /// This policy with parameters changed (policy simulations, API.md §8):
    /// each change names a parameter by its JSON pointer in the served policy
    /// document (`GET /v1/policies/{county}`) and gives a value of the same
    /// shape, from a date or for the whole period. The result passes the
    /// same load-time checks as the data files and has its own version.
    pub fn with_changes(&self, changes: &[ParamChange]) -> Result<Self, Vec<ChangeError>> {
        let county = self.county();
        let mut source = self.source();
        // The policy as changed so far: each change is loaded once, and the
        // last one loaded is the answer.
        let mut changed = self.clone();
        let mut errors = Vec::new();
        for (index, c) in changes.iter().enumerate() {
            let parameter = |message: String| ChangeError { index, field: ChangeField::Parameter, message };
            let Some(pointer) = source_pointer(&c.parameter) else {
                errors.push(parameter(format!("`{}` is not a parameter of the {county} policy document", c.parameter)));
                continue;
            };
            let mut next = source.clone();
            let Some(param) = next.pointer_mut(&pointer).and_then(serde_json::Value::as_object_mut) else {
                errors.push(parameter(format!("`{}` names nothing in the {county} policy document", c.parameter)));
                continue;
            };
            let cited = param.get("clause").is_some_and(serde_json::Value::is_string);
            let Some(values) = param.get_mut("values").and_then(serde_json::Value::as_array_mut).filter(|_| cited)
            else {
                errors.push(parameter(format!(
                    "`{}` is not a parameter (an object with a `clause` and dated values)",
                    c.parameter
                )));
                continue;
            };
            let dated = |from: Option<NaiveDate>| {
                let mut o = serde_json::Map::new();
                if let Some(f) = from {
                    o.insert("from".into(), f.to_string().into());
                }
                o.insert("value".into(), c.value.clone());
                serde_json::Value::Object(o)
            };
            match c.from {
                // The new value for the whole period.
                None => *values = vec![dated(None)],
                // Earlier dates keep the values in force; the new one from `from`.
                Some(from) => {
                    values.retain(|v| {
                        v.get("from")
                            .and_then(serde_json::Value::as_str)
                            .and_then(|d| d.parse::<NaiveDate>().ok())
                            .is_none_or(|d| d < from)
                    });
                    values.push(dated(Some(from)));
                }
            }
            match Self::from_source(county, &next) {
                Ok(p) => {
                    source = next;
                    changed = p;
                }
                Err(e) => errors.push(ChangeError {
                    index,
                    field: ChangeField::Value,
                    message: format!("the changed policy does not load: {e:#}"),
                }),
            }
        }
        if errors.is_empty() {
            Ok(changed)
        } else {
            Err(errors)
        }
    }
}

/// Turns the served form of every parameter (`{clause, values: [...]}`) back
/// into the data files' form (`{clause, history: [...]}`). Parameters are
/// fields of objects, never items of a list (a served policy that loads back
/// as it is, tested, shows it).
fn as_data_file(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(o) = v {
        if o.get("clause").is_some_and(serde_json::Value::is_string) {
            if let Some(values) = o.remove("values") {
                o.insert("history".into(), values);
            }
        }
        o.values_mut().for_each(as_data_file);
    }
}

/// A parameter change of a policy simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamChange {
    /// JSON pointer into `GET /v1/policies/{county}`.
    pub parameter: String,
    pub value: serde_json::Value,
    /// The date from which the new value applies (earlier dates keep the value in force).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeField {
    Parameter,
    Value,
}

impl ChangeField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parameter => "parameter",
            Self::Value => "value",
        }
    }
}

/// A change that cannot be made: the parameter it names, or its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeError {
    pub index: usize,
    pub field: ChangeField,
    pub message: String,
}

impl ChangeError {
    /// The error as a bad field of the simulation request, `/changes/{index}/{field}`.
    pub fn into_field_error(self) -> crate::domain::FieldError {
        let field = format!("/changes/{}/{}", self.index, self.field.as_str());
        crate::domain::FieldError::new(field, "invalid_value", self.message)
    }
}

/// Where a pointer of the served document lies in [`CountyPolicy::source`]:
/// in the common part or the rules. The reference data (plan, departments,
/// schools, targets) holds no parameter.
fn source_pointer(served: &str) -> Option<String> {
    let first = served.strip_prefix('/')?.split('/').next()?;
    let section = match first {
        "document" | "period" | "annual_limit" | "eligibility" | "trade_friction" | "public_notice" | "kinds" => {
            "/common"
        }
        "rules" => "",
        _ => return None,
    };
    Some(format!("{section}{served}"))
}

fn check(county: County, common: &Common, rules: &CountyRules, reference: &Reference) -> anyhow::Result<()> {
    if common.document.county != county {
        bail!("document.county is `{}` but the file is in the `{county}` directory", common.document.county);
    }
    if common.period.from > common.period.to {
        bail!("period: `from` is after `to`");
    }
    let supported: &[Kind] = match rules {
        CountyRules::Wuyi(_) => wuyi::KINDS,
        CountyRules::Changxing(_) => changxing::KINDS,
    };
    for kind in common.kinds.keys() {
        if !supported.contains(kind) {
            bail!("kind `{kind}` is listed but the {county} rules do not implement it");
        }
    }
    for kind in supported {
        if !common.kinds.contains_key(kind) {
            bail!("kind `{kind}` is implemented but missing from [kinds]");
        }
    }
    for k in common.trade_friction.kinds.values.iter().flat_map(|v| &v.value) {
        if !common.kinds.contains_key(k) {
            bail!("trade_friction.kinds names `{k}`, which this county does not offer");
        }
    }
    // Figures the rules divide by.
    if let CountyRules::Wuyi(r) = rules {
        if r.project_training.rate_per_class_hour.values.iter().any(|v| v.value.0.is_zero()) {
            bail!("rules.project_training.rate_per_class_hour must be above zero (the uplifted cap is scaled by it)");
        }
        if r.online_training.full_trainees.values.iter().any(|v| v.value == 0) {
            bail!("rules.online_training.full_trainees must be above zero (trainees are prorated by it)");
        }
    }
    let mut codes = std::collections::BTreeSet::new();
    for d in &reference.departments {
        if !codes.insert(&d.code) {
            bail!("department code `{}` appears twice", d.code);
        }
    }
    for (year, total) in &reference.plan.totals {
        let sum: u32 = reference.departments.iter().map(|d| d.plans.get(year).copied().unwrap_or(0)).sum();
        if sum != *total {
            bail!("plan {year}: departments add up to {sum}, the attachment's total is {total}");
        }
    }
    if let Some(total) = reference.plan.done_2019_total {
        let sum: u32 = reference.departments.iter().filter_map(|d| d.done_2019).sum();
        if sum != total {
            bail!("2019 figures add up to {sum}, the attachment's total is {total}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_param_is_looked_up_by_date() {
        let p: Param<Amount> = toml::from_str(
            r#"clause = "X"
               history = [{ value = "100" }, { from = "2021-01-01", value = "200" }]"#,
        )
        .unwrap();
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(p.dec(d("2020-12-31")), Decimal::new(100, 0));
        assert_eq!(p.dec(d("2021-01-01")), Decimal::new(200, 0));
    }

    #[test]
    fn bad_params_are_refused() {
        let overlap = r#"clause = "X"
            history = [{ from = "2021-01-01", value = "1" }, { from = "2021-01-01", value = "2" }]"#;
        assert!(toml::from_str::<Param<Amount>>(overlap).unwrap_err().to_string().contains("overlapping"));
        let no_clause = r#"clause = ""
            value = "1""#;
        assert!(toml::from_str::<Param<Amount>>(no_clause).unwrap_err().to_string().contains("clause"));
        assert!(toml::from_str::<Param<Amount>>("clause = \"X\"\nvalue = \"12a\"").is_err());
        assert!(toml::from_str::<Param<Amount>>("clause = \"X\"\nvalue = 12.5").is_err());
    }

    #[test]
    fn amounts_take_exactly_their_pattern() {
        let pattern = regex::Regex::new(&Amount::pattern()).unwrap();
        assert_eq!(Amount::pattern(), "^[0-9]{1,9}(\\.[0-9]{1,4})?$");
        for ok in ["0", "1000", "0.95", "0.30", "999999999.9999", "000000001"] {
            assert_eq!(Amount::parse(ok).map(|a| a.0), ok.parse().ok(), "{ok}");
            assert!(pattern.is_match(ok), "{ok}");
        }
        let refused = [
            "",
            "-1",
            "-0",
            "+1",
            " 1",
            "1 ",
            "1e3",
            ".5",
            "5.",
            "1_000",
            "0.00001",
            "1000000000",
            "50000000000000000000000000000",
            "0.0000000000000000000000000001",
        ];
        for bad in refused {
            assert_eq!(Amount::parse(bad), None, "{bad}");
            assert!(!pattern.is_match(bad), "{bad}");
        }
        let toml = "clause = \"X\"\nvalue = \"1000000000\"";
        let message = toml::from_str::<Param<Amount>>(toml).unwrap_err().to_string();
        assert!(message.contains("at most 9 digits before the point and 4 after"), "{message}");
    }

    #[test]
    fn citations_need_a_clause_and_nothing_else() {
        let cited: Citation = toml::from_str("clause = \"R-ONCE, WY §4(1)2\"").unwrap();
        assert_eq!(cited.clause, "R-ONCE, WY §4(1)2");
        assert!(toml::from_str::<Citation>("clause = \" \"").unwrap_err().to_string().contains("clause"));
        assert!(toml::from_str::<Citation>("clause = \"X\"\nvalue = \"1\"").is_err());
    }

    #[test]
    fn a_period_may_be_one_day_long_but_cannot_end_before_it_starts() {
        let policy = Policy::embedded(None).unwrap();
        for p in policy.counties() {
            let mut common = p.common.clone();
            common.period.to = common.period.from;
            check(p.county(), &common, &p.rules, &p.reference).expect("a one-day period");
            common.period.to = common.period.from.pred_opt().unwrap();
            let refused = check(p.county(), &common, &p.rules, &p.reference).unwrap_err();
            assert!(refused.to_string().contains("`from` is after `to`"), "{refused}");
        }
    }

    #[test]
    fn a_citation_is_not_a_parameter_to_change() {
        let policy = Policy::embedded(None).unwrap();
        let wuyi = policy.county(crate::domain::County::Wuyi);
        let errors =
            wuyi.with_changes(&[change("/rules/project_training/once", serde_json::json!("x"), None)]).unwrap_err();
        let refused = |e: &ChangeError| {
            e.index == 0 && e.field == ChangeField::Parameter && e.message.contains("not a parameter")
        };
        assert!(errors.iter().any(refused), "{errors:?}");
    }

    fn change(parameter: &str, value: serde_json::Value, from: Option<&str>) -> ParamChange {
        ParamChange { parameter: parameter.into(), value, from: from.map(|d| d.parse().unwrap()) }
    }

    #[test]
    fn a_served_policy_loads_back_as_it_is() {
        for p in Policy::embedded(None).unwrap().counties() {
            let same = p.with_changes(&[]).unwrap();
            assert_eq!(same.version, p.version, "{}", p.county());
            assert_eq!(same.source(), p.source());
        }
    }

    #[test]
    fn a_change_replaces_a_parameter_or_takes_over_from_its_date() {
        let policy = Policy::embedded(None).unwrap();
        let wuyi = policy.county(County::Wuyi);
        let day = |s: &str| s.parse::<NaiveDate>().unwrap();
        let level = "/rules/qualification_training/levels/intermediate";
        let whole = wuyi.with_changes(&[change(level, "1300".into(), None)]).unwrap();
        assert_ne!(whole.version, wuyi.version);
        let CountyRules::Wuyi(r) = &whole.rules else { panic!("wuyi rules") };
        let p = &r.qualification_training.levels[&crate::domain::Level::Intermediate];
        assert_eq!(p.dec(day("2020-03-01")), Decimal::new(1300, 0));
        assert_eq!(p.clause, "WY §4(1)1", "the clause stays");

        let dated = wuyi.with_changes(&[change("/annual_limit", 2.into(), Some("2021-01-01"))]).unwrap();
        assert_eq!(*dated.common.annual_limit.at(day("2020-12-31")), 3);
        assert_eq!(*dated.common.annual_limit.at(day("2021-01-01")), 2);
        let again = dated.with_changes(&[change("/annual_limit", 4.into(), Some("2020-06-01"))]).unwrap();
        assert_eq!(*again.common.annual_limit.at(day("2020-05-31")), 3);
        assert_eq!(
            *again.common.annual_limit.at(day("2021-06-01")),
            4,
            "a later value from before the new date is replaced"
        );
        // A value dated before the new one stays; one dated on the same day is replaced.
        let later = dated.with_changes(&[change("/annual_limit", 5.into(), Some("2021-06-01"))]).unwrap();
        let at = |p: &CountyPolicy, d| *p.common.annual_limit.at(day(d));
        assert_eq!((at(&later, "2020-12-31"), at(&later, "2021-03-01"), at(&later, "2021-06-01")), (3, 2, 5));
        let same_day = dated.with_changes(&[change("/annual_limit", 1.into(), Some("2021-01-01"))]).unwrap();
        assert_eq!((at(&same_day, "2020-12-31"), at(&same_day, "2021-01-01")), (3, 1));
    }

    #[test]
    fn bad_changes_name_their_parameter_or_value() {
        let policy = Policy::embedded(None).unwrap();
        let wuyi = policy.county(County::Wuyi);
        let errors = wuyi
            .with_changes(&[
                change("/rules/qualification_training/levels/grandmaster", "1".into(), None),
                change("/annual_limit", "three".into(), None),
                change("/period", "2020-01-01".into(), None),
                change("annual_limit", 2.into(), None),
                change("/rules/project_training/cap", 1000.into(), None),
                change("/rules/project_training/cap", "-5".into(), None),
                // Figures the rules divide by.
                change("/rules/project_training/rate_per_class_hour", "0".into(), None),
                change("/rules/online_training/full_trainees", 0.into(), Some("2021-01-01")),
                // The reference data holds no parameter.
                change("/plan/totals/2020", 20000.into(), None),
            ])
            .unwrap_err();
        let got: Vec<(usize, ChangeField)> = errors.iter().map(|e| (e.index, e.field)).collect();
        assert_eq!(
            got,
            vec![
                (0, ChangeField::Parameter),
                (1, ChangeField::Value),
                (2, ChangeField::Parameter),
                (3, ChangeField::Parameter),
                (4, ChangeField::Value),
                (5, ChangeField::Value),
                (6, ChangeField::Value),
                (7, ChangeField::Value),
                (8, ChangeField::Parameter),
            ]
        );
        // A change that breaks a load-time check of the whole policy.
        let friction = change("/trade_friction/kinds", serde_json::json!(["craftsman_award"]), None);
        let e = wuyi.with_changes(&[friction]).unwrap_err();
        assert_eq!((e[0].index, e[0].field), (0, ChangeField::Value));
        assert!(e[0].message.contains("does not offer"), "{}", e[0].message);
    }
}
