//! How ledger keys become bytes: the only place that does it.
//!
//! A key's canonical form is the text layout v1 stored it under (so a store
//! moved from v1 keeps every key it held); the materialised state holds the
//! first 16 bytes of its SHA-256, which is also what a record keeps.

use std::fmt::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::rules::{ApprenticePart, LedgerKey, PersonScope};

/// A key as the state and the records hold it.
pub type KeyDigest = [u8; 16];

/// The canonical text of a key.
pub fn canonical(k: &LedgerKey) -> String {
    let mut text = String::new();
    // Writing to a `String` cannot fail.
    let _ = write_canonical(k, &mut text);
    text
}

/// Writes a key's canonical text, piece by piece (so that [`digest`] hashes
/// it without building it).
fn write_canonical(k: &LedgerKey, out: &mut impl Write) -> fmt::Result {
    match k {
        LedgerKey::Usage { county, person, year } => write!(out, "usage:{county}:{person}:{year}"),
        LedgerKey::Certificate { county, kind, number } => write!(out, "cert:{county}:{kind}:{number}"),
        LedgerKey::Person { county, kind, person, scope } => {
            write!(out, "{county}:{kind}:{person}:")?;
            match scope {
                PersonScope::OccupationLevel { occupation, level } => write!(out, "{occupation}:{level}"),
                PersonScope::ProjectLevel { project, level } => write!(out, "project:{project}:{level}"),
                PersonScope::Project(p) => out.write_str(p),
                PersonScope::SchoolYear(y) => write!(out, "school_year:{y}"),
                PersonScope::TrainingYear(y) => write!(out, "year:{y}"),
                PersonScope::Training(r) => write!(out, "training:{r}"),
                PersonScope::ApprenticeYear { year, part } => match part {
                    ApprenticePart::Stage(stage) => write!(out, "apprentice_year:{year}:{stage}"),
                    ApprenticePart::Counted => write!(out, "apprentice_year:{year}:counted"),
                },
            }
        }
        LedgerKey::Natural { county, kind, parts } => {
            write!(out, "{county}:{kind}:")?;
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    out.write_char(':')?;
                }
                out.write_str(part)?;
            }
            Ok(())
        }
        LedgerKey::Cumulative { county, kind, organization } => {
            write!(out, "cumulative:{county}:{kind}:{organization}")
        }
        LedgerKey::Tranche { county, kind, person, training_year } => {
            write!(out, "tranche:{county}:{kind}:{person}:apprentice_year:{training_year}")
        }
    }
}

/// Feeds the text written to it to SHA-256.
struct Hashing(Sha256);

impl Write for Hashing {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The digest of a key's canonical text.
pub fn digest(k: &LedgerKey) -> KeyDigest {
    let mut hashing = Hashing(Sha256::new());
    // Hashing cannot fail.
    let _ = write_canonical(k, &mut hashing);
    truncate(&hashing.0.finalize())
}

/// The digest of a canonical text (a v1 record's effects are texts).
pub fn digest_text(text: &str) -> KeyDigest {
    truncate(&Sha256::digest(text.as_bytes()))
}

/// The first 16 bytes of a SHA-256.
fn truncate(full: &[u8]) -> KeyDigest {
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{County, Kind};

    #[test]
    fn canonical_forms_are_the_v1_texts() {
        let p = "p0123".to_string();
        let cases = [
            (LedgerKey::Usage { county: County::Wuyi, person: p.clone(), year: 2020 }, "usage:wuyi:p0123:2020"),
            (
                LedgerKey::Certificate {
                    county: County::Changxing,
                    kind: Kind::SafetyTraining,
                    number: "AB1:RENEWAL".into(),
                },
                "cert:changxing:safety_training:AB1:RENEWAL",
            ),
            (
                LedgerKey::Person {
                    county: County::Wuyi,
                    kind: Kind::QualificationTraining,
                    person: p.clone(),
                    scope: PersonScope::OccupationLevel { occupation: "6-31-01-03".into(), level: "junior".into() },
                },
                "wuyi:qualification_training:p0123:6-31-01-03:junior",
            ),
            (
                LedgerKey::Person {
                    county: County::Changxing,
                    kind: Kind::Apprenticeship,
                    person: p.clone(),
                    scope: PersonScope::ApprenticeYear { year: "2020".into(), part: ApprenticePart::Counted },
                },
                "changxing:apprenticeship:p0123:apprentice_year:2020:counted",
            ),
            (
                LedgerKey::Tranche {
                    county: County::Changxing,
                    kind: Kind::Apprenticeship,
                    person: p.clone(),
                    training_year: "2020".into(),
                },
                "tranche:changxing:apprenticeship:p0123:apprentice_year:2020",
            ),
            (
                LedgerKey::Cumulative {
                    county: County::Changxing,
                    kind: Kind::InstitutionInvestment,
                    organization: "91330522MA0EXMP048".into(),
                },
                "cumulative:changxing:institution_investment:91330522MA0EXMP048",
            ),
            (
                LedgerKey::Natural {
                    county: County::Changxing,
                    kind: Kind::SkillContestFunding,
                    parts: vec!["C-1".into()],
                },
                "changxing:skill_contest_funding:C-1",
            ),
            (
                LedgerKey::Natural {
                    county: County::Wuyi,
                    kind: Kind::MasterStudioAward,
                    parts: vec!["Studio A".into(), "provincial".into()],
                },
                "wuyi:master_studio_award:Studio A:provincial",
            ),
        ];
        for (k, text) in cases {
            assert_eq!(canonical(&k), text);
            assert_eq!(digest(&k), digest_text(text));
        }
        // Every other person scope, and a natural key without parts.
        let person =
            |scope| LedgerKey::Person { county: County::Wuyi, kind: Kind::ProjectTraining, person: p.clone(), scope };
        let prefix = "wuyi:project_training:p0123:";
        let scopes = [
            (PersonScope::ProjectLevel { project: "P1".into(), level: "senior".into() }, "project:P1:senior"),
            (PersonScope::Project("P1".into()), "P1"),
            (PersonScope::SchoolYear("2020".into()), "school_year:2020"),
            (PersonScope::TrainingYear("2020".into()), "year:2020"),
            (PersonScope::Training("T-1".into()), "training:T-1"),
            (
                PersonScope::ApprenticeYear { year: "2020".into(), part: ApprenticePart::Stage("enrolment".into()) },
                "apprentice_year:2020:enrolment",
            ),
        ];
        let none = LedgerKey::Natural { county: County::Changxing, kind: Kind::SkillContestFunding, parts: vec![] };
        let more = scopes.into_iter().map(|(scope, tail)| (person(scope), format!("{prefix}{tail}")));
        for (k, text) in more.chain([(none, "changxing:skill_contest_funding:".to_string())]) {
            assert_eq!(canonical(&k), text);
            assert_eq!(digest(&k), digest_text(&text));
        }
    }
}
