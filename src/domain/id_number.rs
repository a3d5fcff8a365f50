//! Resident identity number, GB 11643-1999.

use chrono::{Datelike, NaiveDate};

use super::FieldError;

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [u8; 11] = *b"10X98765432";

/// An 18-character resident ID number with a valid check digit and a real
/// birth date. It is personal data: never log it, never put it in a URL.
#[derive(Clone, PartialEq, Eq)]
pub struct IdNumber {
    value: String,
    birth: NaiveDate,
}

impl std::fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdNumber({})", self.masked())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    Male,
    Female,
}

/// The GB 11643-1999 check character of 17 digits.
fn check_character(digits: &[u8]) -> u8 {
    let sum: u32 = digits.iter().zip(WEIGHTS).map(|(c, w)| u32::from(c - b'0') * w).sum();
    CHECK[(sum % 11) as usize]
}

impl IdNumber {
    /// The ID number whose 17 leading digits are `first17`, with its check
    /// character (for test data and examples); `None` unless 17 digits.
    pub fn complete(first17: &str) -> Option<String> {
        let b = first17.as_bytes();
        (b.len() == 17 && b.iter().all(u8::is_ascii_digit)).then(|| format!("{first17}{}", check_character(b) as char))
    }

    /// Parses `s`; `field` is the JSON pointer used in the error.
    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        let s = s.to_ascii_uppercase();
        let b = s.as_bytes();
        if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) || !(b[17].is_ascii_digit() || b[17] == b'X') {
            return Err(FieldError::new(field, "invalid_format", "an ID number is 17 digits followed by a digit or X"));
        }
        // The 17 leading characters are digits (checked above).
        let n = |r: std::ops::Range<usize>| super::digits_value(&b[r]);
        let birth =
            NaiveDate::from_ymd_opt(n(6..10) as i32, n(10..12), n(12..14)).filter(|d| d.year() >= 1900).ok_or_else(
                || FieldError::new(field, "invalid_date", "the birth-date segment is not a real date from 1900 on"),
            )?;
        if check_character(&b[..17]) != b[17] {
            return Err(FieldError::new(field, "invalid_checksum", "the check digit is wrong"));
        }
        Ok(Self { value: s, birth })
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }

    pub fn birth_date(&self) -> NaiveDate {
        self.birth
    }

    /// The 17th digit: odd for men, even for women.
    pub fn sex(&self) -> Sex {
        if (self.value.as_bytes()[16] - b'0') % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    /// Completed years of age on `day` (the birthday itself counts; a 29 February
    /// birthday is reached on 1 March in common years).
    pub fn age_on(&self, day: NaiveDate) -> i32 {
        let b = self.birth;
        let mut age = day.year() - b.year();
        if (day.month(), day.day()) < (b.month(), b.day()) {
            age -= 1;
        }
        age
    }

    /// `330723********123X`: region kept, birth date hidden.
    pub fn masked(&self) -> String {
        format!("{}********{}", &self.value[..6], &self.value[14..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn valid_numbers_parse_and_give_birth_date_and_sex() {
        let id = IdNumber::parse("330723199005060038", "/x").unwrap();
        assert_eq!(id.birth_date(), d("1990-05-06"));
        assert_eq!(id.sex(), Sex::Male);
        let id = IdNumber::parse("330522197803150744", "/x").unwrap();
        assert_eq!(id.sex(), Sex::Female);
        assert_eq!(id.masked(), "330522********0744");
        assert!(IdNumber::parse("33072319900506109x", "/x").is_ok());
    }

    /// The code of the error a refused number gets.
    fn refusal(id: &str) -> String {
        IdNumber::parse(id, "/x").unwrap_err().code.to_string()
    }

    #[test]
    fn wrong_check_digit_and_impossible_dates_are_refused() {
        for (id, code) in [
            ("330723199005061130", "invalid_checksum"),
            ("330723199002300000", "invalid_date"),
            ("33072319900506003", "invalid_format"),
            ("", "invalid_format"),
        ] {
            assert_eq!(refusal(id), code, "{id}");
        }
    }

    #[test]
    fn a_wrong_character_anywhere_is_a_format_error_not_a_checksum_or_date_error() {
        for id in [
            // 17 digits and a last character that is neither a digit nor X.
            "33072319900506003Y",
            // A letter or a space among the 17 digits, with a valid-looking last character.
            "3307231990050600A8",
            "330723 99005060038",
            "33072319900506 03X",
        ] {
            assert_eq!(refusal(id), "invalid_format", "{id}");
        }
    }

    #[test]
    fn age_counts_the_birthday_and_leap_days() {
        let id = IdNumber::parse(&with_check("33052219800301001"), "/x").unwrap();
        assert_eq!(id.age_on(d("2020-03-01")), 40);
        assert_eq!(id.age_on(d("2020-02-29")), 39);
        let leap = IdNumber::parse(&with_check("33052219800229002"), "/x").unwrap();
        assert_eq!(leap.age_on(d("2020-02-29")), 40);
        assert_eq!(leap.age_on(d("2020-02-28")), 39);
        assert_eq!(leap.age_on(d("2021-02-28")), 40);
        assert_eq!(leap.age_on(d("2021-03-01")), 41);
    }

    #[test]
    fn debug_output_masks_the_number() {
        let id = IdNumber::parse("330723199005060038", "/x").unwrap();
        let shown = format!("{id:?}");
        assert!(!shown.contains("330723199005060038"), "{shown}");
        assert!(shown.contains(&id.masked()), "{shown}");
    }

    #[test]
    fn only_seventeen_digits_are_completed() {
        assert_eq!(IdNumber::complete("33072319900506003").as_deref(), Some("330723199005060038"));
        assert_eq!(IdNumber::complete("3307231990050600"), None);
        assert_eq!(IdNumber::complete("3307231990050600X"), None);
        assert_eq!(IdNumber::complete("330723199005060038"), None);
    }

    pub(crate) fn with_check(s17: &str) -> String {
        IdNumber::complete(s17).expect("17 digits")
    }
}
