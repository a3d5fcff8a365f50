//! Roster files: a class of claims as CSV (one claim a row) or JSONL (one
//! JSON claim a line), read into claims and checked with the server's own
//! parser before anything is sent.
//!
//! CSV columns are the claim's field paths joined with dots: `claim_id`,
//! `county`, `kind`, `event_date`, `applicant.id_number`,
//! `applicant.employer.credit_code`, `details.level`, … A cell's JSON type
//! comes from the field: text, a whole number (`details.training_year`),
//! `true`/`false` (`applicant.local_hukou`), a list of codes separated by
//! `;` (`applicant.groups`: `rural;unemployed`), or JSON for a list of
//! objects (`details.days` of online training:
//! `[{"date":"2020-03-05","class_hours":4}]`). An empty cell leaves the field
//! out. Money stays text (`"1200.00"`), as the service wants it.
//!
//! Rows are numbered as a spreadsheet numbers them: the header is row 1, the
//! first claim row 2 (in JSONL, the line number).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{Map, Value};
use subsidy_service::domain::{parse_new_claim, County, Kind};
use subsidy_service::problem::FieldError;

/// The JSON type a CSV column's cells are read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Integer,
    Boolean,
    /// Strings separated by `;` (or `；`).
    List,
    /// A JSON value written in the cell.
    Json,
}

const BOOLEANS: &[&str] = &[
    "local_hukou",
    "residence_permit",
    "employed_in_county",
    "unemployment_registered",
    "receives_monthly_pension",
    "public_institution_staff",
    "class_size_exception_approved",
    "completion_certificate",
    "trained_in_county",
    "in_senior_stage",
    "cooperative_enrollment",
    "acceptance_passed",
    "key_rated",
];
const INTEGERS: &[&str] = &[
    "training_year",
    "months",
    "class_hours",
    "class_size",
    "trainees",
    "repeated_hours",
    "school_year",
    "training_days",
];
const LISTS: &[&str] = &["groups"];
const JSON: &[&str] = &["days"];

/// The type of a column: from the field's name, else from the server's
/// examples, else text.
pub fn column_type(path: &str) -> ColumnType {
    let last = path.rsplit('.').next().unwrap_or(path);
    if path.contains('.') {
        if BOOLEANS.contains(&last) {
            return ColumnType::Boolean;
        }
        if INTEGERS.contains(&last) {
            return ColumnType::Integer;
        }
        if LISTS.contains(&last) {
            return ColumnType::List;
        }
        if JSON.contains(&last) {
            return ColumnType::Json;
        }
    }
    example_types().get(path).copied().unwrap_or(ColumnType::Text)
}

fn example_types() -> &'static HashMap<String, ColumnType> {
    static TYPES: std::sync::OnceLock<HashMap<String, ColumnType>> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        let mut m = HashMap::new();
        for (_, ex) in subsidy_service::openapi::claim_examples() {
            for (path, v) in flatten(&ex) {
                m.entry(path).or_insert_with(|| type_of(&v));
            }
        }
        m
    })
}

fn type_of(v: &Value) -> ColumnType {
    match v {
        Value::Bool(_) => ColumnType::Boolean,
        Value::Number(_) => ColumnType::Integer,
        Value::Array(a) if a.iter().all(Value::is_string) => ColumnType::List,
        Value::Array(_) | Value::Object(_) => ColumnType::Json,
        _ => ColumnType::Text,
    }
}

/// The leaves of a claim with their dotted paths, in the claim's order.
pub fn flatten(v: &Value) -> Vec<(String, Value)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, v, out);
                }
            }
            Value::Null => {}
            _ => out.push((prefix.to_string(), v.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// A value as the text of its cell.
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(";")
        }
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A cell's text as the JSON value of its column; text that is not of the
/// column's type stays text, so the parser names the field.
pub fn parse_cell(text: &str, ty: ColumnType) -> Value {
    let t = text.trim();
    match ty {
        ColumnType::Text => Value::String(t.to_string()),
        ColumnType::Integer => t.parse::<i64>().map_or_else(|_| Value::String(t.to_string()), Value::from),
        ColumnType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "是" => Value::Bool(true),
            "false" | "no" | "n" | "0" | "否" => Value::Bool(false),
            _ => Value::String(t.to_string()),
        },
        ColumnType::List => Value::Array(
            t.split([';', '；'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        ColumnType::Json => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())),
    }
}

/// The server's valid example claim of a county and kind.
pub fn example(county: County, kind: Kind) -> Option<Value> {
    subsidy_service::openapi::claim_examples()
        .into_iter()
        .map(|(_, v)| v)
        .find(|v| v["county"] == county.as_str() && v["kind"] == kind.as_str())
}

/// The kinds a county has a template for.
pub fn kinds_of(county: County) -> Vec<Kind> {
    Kind::ALL.iter().copied().filter(|k| example(county, *k).is_some()).collect()
}

/// Columns in the order of the claim in API.md §3 (a field not named here
/// comes after the named ones of its object, alphabetically).
const ORDER: &[&str] = &[
    "claim_id",
    "county",
    "kind",
    "event_date",
    "department",
    "applicant",
    "organization",
    "institution",
    "details",
    "id_number",
    "credit_code",
    "name",
    "local_hukou",
    "residence_permit",
    "employed_in_county",
    "unemployment_registered",
    "receives_monthly_pension",
    "public_institution_staff",
    "groups",
    "employer",
    "industry_code",
];

fn column_order(path: &str) -> Vec<(usize, &str)> {
    path.split('.').map(|seg| (ORDER.iter().position(|o| *o == seg).unwrap_or(ORDER.len()), seg)).collect()
}

/// The CSV template of a county and kind: the header and one valid example row.
pub fn template(county: County, kind: Kind) -> Option<String> {
    let ex = example(county, kind)?;
    let mut leaves = flatten(&ex);
    leaves.sort_by(|a, b| column_order(&a.0).cmp(&column_order(&b.0)));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(leaves.iter().map(|(p, _)| p.as_str())).ok()?;
    w.write_record(leaves.iter().map(|(_, v)| cell(v))).ok()?;
    String::from_utf8(w.into_inner().ok()?).ok()
}

/// One claim of a roster file.
#[derive(Debug, Clone)]
pub struct Row {
    /// The spreadsheet row (CSV: the header is row 1) or JSONL line.
    pub row: u64,
    /// The claim as read (`Value::Null` when the row could not be read).
    pub claim: Value,
    /// Every problem of this row; empty when it is a valid claim.
    pub problems: Vec<FieldError>,
}

impl Row {
    pub fn claim_id(&self) -> Option<&str> {
        self.claim.get("claim_id").and_then(Value::as_str)
    }
}

/// The layout of a roster file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

/// `.jsonl`, `.ndjson` and `.json` are JSONL and `.csv` CSV; any other name
/// is JSONL when its first character (after a byte-order mark) is `{`.
pub fn detect(path: &Path, text: &str) -> Format {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
        Some("csv") => Format::Csv,
        _ if text.trim_start_matches('\u{feff}').trim_start().starts_with('{') => Format::Jsonl,
        _ => Format::Csv,
    }
}

/// Reads a roster file (UTF-8, with or without a byte-order mark). An error
/// is a file that cannot be read at all; a bad row is a row with problems.
pub fn read(path: &Path) -> Result<Vec<Row>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        format!(
            "{}: not UTF-8 (byte {}); save it as \"CSV UTF-8\" (Excel) or UTF-8 text",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    read_str(&text, detect(path, &text))
}

/// Reads roster text in the given layout.
pub fn read_str(text: &str, format: Format) -> Result<Vec<Row>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Csv => read_csv(text),
        Format::Jsonl => Ok(read_jsonl(text)),
    }
}

fn read_jsonl(text: &str) -> Vec<Row> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let row = i as u64 + 1;
            match serde_json::from_str::<Value>(l) {
                Ok(claim) => Row { row, claim, problems: Vec::new() },
                Err(e) => Row {
                    row,
                    claim: Value::Null,
                    problems: vec![FieldError::new("", "malformed_json", format!("not JSON: {e}"))],
                },
            }
        })
        .collect()
}

fn read_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut r = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(text.as_bytes());
    let header: Vec<String> =
        r.headers().map_err(|e| format!("the header row: {e}"))?.iter().map(|h| h.trim().to_string()).collect();
    check_header(&header)?;
    let types: Vec<ColumnType> = header.iter().map(|h| column_type(h)).collect();
    let mut rows = Vec::new();
    // Rows as a spreadsheet numbers them: one a record, the header row 1
    // (a line break inside a quoted cell does not start a row).
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| format!("reading the file: {e}"))?;
        let row = i as u64 + 2;
        if rec.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let mut problems = Vec::new();
        if rec.len() > header.len() {
            problems.push(FieldError::new(
                "",
                "invalid_format",
                format!("{} cells, the header has {} columns", rec.len(), header.len()),
            ));
        }
        let mut claim = Value::Object(Map::new());
        for ((name, ty), text) in header.iter().zip(&types).zip(rec.iter()) {
            if text.trim().is_empty() {
                continue;
            }
            insert(&mut claim, name, parse_cell(text, *ty));
        }
        rows.push(Row { row, claim, problems });
    }
    Ok(rows)
}

fn check_header(header: &[String]) -> Result<(), String> {
    let mut seen = BTreeMap::new();
    for (i, h) in header.iter().enumerate() {
        if h.is_empty() || h.split('.').any(str::is_empty) {
            return Err(format!("column {}: `{h}` is not a field path such as applicant.id_number", i + 1));
        }
        if seen.insert(h.as_str(), i).is_some() {
            return Err(format!("column `{h}` appears twice"));
        }
    }
    for h in header {
        let mut prefix = String::new();
        for seg in h.split('.') {
            if !prefix.is_empty() {
                if seen.contains_key(prefix.as_str()) {
                    return Err(format!("columns `{prefix}` and `{h}` cannot both be given"));
                }
                prefix.push('.');
            }
            prefix.push_str(seg);
        }
    }
    Ok(())
}

fn insert(claim: &mut Value, path: &str, value: Value) {
    let mut at = claim;
    let mut segs = path.split('.').peekable();
    while let Some(seg) = segs.next() {
        let Value::Object(m) = at else { return };
        if segs.peek().is_none() {
            m.insert(seg.to_string(), value);
            return;
        }
        at = m.entry(seg.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
}

/// Checks every row with the server's parser of new claims (its shape and
/// the refusals of new claims: a claim id holding an ID number, an
/// applicant born after the event date, another county's field), and that
/// no claim id is used twice in the file; fills each row's problems.
pub fn check(rows: &mut [Row]) {
    let mut ids: HashMap<String, u64> = HashMap::new();
    for r in rows.iter_mut() {
        if r.claim.is_null() {
            continue;
        }
        if let Err(errs) = parse_new_claim(&r.claim) {
            r.problems.extend(errs);
        }
        if let Some(id) = r.claim_id().map(str::to_string) {
            match ids.get(&id) {
                Some(first) => r.problems.push(FieldError::new(
                    "/claim_id",
                    "duplicate",
                    format!("claim id `{id}` is also in row {first}"),
                )),
                None => {
                    ids.insert(id, r.row);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example's template reads back as the example, and is valid.
    #[test]
    fn templates_read_back_as_the_examples() {
        for (name, ex) in subsidy_service::openapi::claim_examples() {
            let county = County::parse(ex["county"].as_str().unwrap()).unwrap();
            let kind = Kind::parse(ex["kind"].as_str().unwrap()).unwrap();
            let csv = template(county, kind).unwrap();
            let mut rows = read_str(&csv, Format::Csv).unwrap();
            check(&mut rows);
            assert_eq!(rows.len(), 1, "{name}");
            assert!(rows[0].problems.is_empty(), "{name}: {:?}", rows[0].problems);
            let mut expected = ex.clone();
            drop_empty_lists(&mut expected);
            assert_eq!(rows[0].claim, expected, "{name}");
        }
    }

    /// A row the server would refuse as a new claim is refused here, before
    /// anything is sent: the intake refusals as well as the shape's.
    #[test]
    fn rows_are_checked_as_new_claims() {
        let (_, ex) = subsidy_service::openapi::claim_examples()
            .into_iter()
            .find(|(_, ex)| ex["kind"] == "qualification_training" && ex.get("applicant").is_some())
            .expect("a qualification example");
        let born: u32 = ex["applicant"]["id_number"].as_str().unwrap()[6..10].parse().unwrap();
        let mut before_birth = ex.clone();
        before_birth["event_date"] = format!("{}-12-31", born - 1).into();
        let mut id_in_claim_id = ex.clone();
        id_in_claim_id["claim_id"] = format!("R-{}", ex["applicant"]["id_number"].as_str().unwrap()).into();
        let mut rows: Vec<Row> = [ex.clone(), before_birth, id_in_claim_id]
            .into_iter()
            .enumerate()
            .map(|(i, mut claim)| {
                if i > 0 {
                    claim["claim_id"] = format!("{}-{i}", claim["claim_id"].as_str().unwrap()).into();
                }
                Row { row: i as u64 + 2, claim, problems: Vec::new() }
            })
            .collect();
        check(&mut rows);
        let fields: Vec<Vec<&str>> =
            rows.iter().map(|r| r.problems.iter().map(|p| p.field.as_str()).collect()).collect();
        assert_eq!(fields, [vec![], vec!["/applicant/id_number"], vec!["/claim_id"]]);
    }

    fn drop_empty_lists(v: &mut Value) {
        if let Value::Object(m) = v {
            m.retain(|_, v| !matches!(v, Value::Array(a) if a.is_empty()));
            m.values_mut().for_each(drop_empty_lists);
        }
    }

    #[test]
    fn cells_take_their_column_types() {
        assert_eq!(parse_cell("rural；unemployed; ", ColumnType::List), serde_json::json!(["rural", "unemployed"]));
        assert_eq!(parse_cell("是", ColumnType::Boolean), Value::Bool(true));
        assert_eq!(parse_cell("2020", ColumnType::Integer), Value::from(2020));
        assert_eq!(parse_cell("twenty", ColumnType::Integer), Value::from("twenty"));
        assert_eq!(column_type("details.days"), ColumnType::Json);
        assert_eq!(column_type("details.fee"), ColumnType::Text);
        assert_eq!(column_type("applicant.groups"), ColumnType::List);
    }

    #[test]
    fn a_bom_and_blank_rows_are_ignored_and_bad_headers_refused() {
        let rows =
            read_str("\u{feff}claim_id,county\r\n,\r\nA-1,wuyi\r\n\"A-\r\n2\",wuyi\r\nA-3,wuyi\r\n", Format::Csv)
                .unwrap();
        assert_eq!(rows.iter().map(|r| r.row).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(rows[0].claim, serde_json::json!({"claim_id": "A-1", "county": "wuyi"}));
        assert!(read_str("applicant,applicant.name\nx,y\n", Format::Csv).is_err());
        assert!(read_str("a,a\nx,y\n", Format::Csv).is_err());
    }
}
