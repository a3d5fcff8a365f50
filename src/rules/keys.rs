//! What the rules ask of the ledger and take in it, as typed keys. Only the
//! ledger's storage code turns a key into bytes.

use crate::domain::{County, Kind};

/// A key the rules consult or take in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LedgerKey {
    /// R-LIMIT: a person's counted grants in a calendar year.
    Usage { county: County, person: String, year: i32 },
    /// R-CERT: a certificate backs at most one granted claim per county and kind.
    Certificate { county: County, kind: Kind, number: String },
    /// R-ONCE / R-SAME-LEVEL: what a person may get once within a kind.
    Person { county: County, kind: Kind, person: String, scope: PersonScope },
    /// R-ONCE for claims without a person: an award's recipient and title, a
    /// studio's level, a contest, an organisation's training period.
    Natural { county: County, kind: Kind, parts: Vec<String> },
    /// An institution's cumulative grants (CX §3(8)).
    Cumulative { county: County, kind: Kind, organization: String },
    /// Apprenticeship tranches paid for a person's training year (CX §3(6)).
    Tranche { county: County, kind: Kind, person: String, training_year: String },
}

/// What a person's once-only key is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PersonScope {
    /// One occupation at one level (same-level rule).
    OccupationLevel { occupation: String, level: String },
    /// A project at a level (CX skill upgrade without an occupation code).
    ProjectLevel { project: String, level: String },
    /// A training project.
    Project(String),
    /// A school year (living allowances, school subsidies).
    SchoolYear(String),
    /// A training year.
    TrainingYear(String),
    /// One training, by its reference.
    Training(String),
    /// An apprenticeship year: each stage once, and counted once.
    ApprenticeYear { year: String, part: ApprenticePart },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ApprenticePart {
    /// A tranche stage (`enrolment`, `completion`).
    Stage(String),
    /// The year's first granted tranche, which counts against the yearly limit.
    Counted,
}
