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
pub use wuyi::{WuyiRules, KINDS as WUYI_KINDS};

use crate::domain::{County, Group, Kind, Payee};

/// A non-negative decimal written as a string in the data files (never a float).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(pub Decimal);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| {
            serde::de::Error::custom("amounts are quoted decimal strings such as \"1000\", never bare numbers")
        })?;
        let v: Decimal = s.trim().parse().map_err(|_| serde::de::Error::custom(format!("malformed amount `{s}`")))?;
        if v.is_sign_negative() {
            return Err(serde::de::Error::custom(format!("negative amount `{s}`")));
        }
        Ok(Amount(v))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.normalize().to_string())
    }
}

/// One value of a parameter and the date it takes effect (`None`: from the
/// start of the document's period).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct Param<T> {
    pub clause: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Period {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub clause: String,
}

/// A kind the document offers.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TradeFriction {
    pub rate: Param<Amount>,
    /// Last event date the uplift applies to.
    pub until: Param<NaiveDate>,
    /// Kinds whose standard is raised (I-9, I-12).
    pub kinds: Param<Vec<Kind>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Common {
    pub document: Document,
    pub period: Period,
    pub annual_limit: Param<u32>,
    pub trade_friction: TradeFriction,
    pub eligibility: Eligibility,
    /// Reason notices that follow a grant (WY §5: public notice 公示).
    pub public_notice: Param<Vec<Kind>>,
    pub kinds: BTreeMap<Kind, KindEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub clause: String,
    pub title_zh: String,
    pub totals: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_2019_total: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct School {
    pub seq: u32,
    pub name_zh: String,
    pub note_zh: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schools {
    pub clause: String,
    pub title_zh: String,
    pub entries: Vec<School>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub count: u32,
    pub clause: String,
}

/// Reference data of the attachments (RULES.md §6).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Serialize)]
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

    pub fn offers(&self, kind: Kind) -> bool {
        self.common.kinds.contains_key(&kind)
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
    check(county, &common, &rules, &reference)?;
    let canonical = serde_json::to_vec(&serde_json::json!({
        "common": &common, "rules": &rules, "reference": &reference,
    }))?;
    let version = format!("sha256:{}", hex::encode(Sha256::digest(&canonical)));
    Ok(CountyPolicy { common, rules, reference, version })
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
}
