//! The BSN (burgerservicenummer). A [`Bsn`] exists only if it passed the elfproef; it cannot be
//! printed, serialised or compared, so the only thing to do with one is pseudonymise it.

use std::fmt;

/// A citizen service number that passed the elfproef. Deliberately not `Display`, `Serialize`,
/// `Clone` or `PartialEq`: it is parsed at the edge and consumed by [`crate::PseudonymKey::pseudonymise`].
pub struct Bsn([u8; 9]);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BsnError {
    #[error("must be exactly 9 digits")]
    NotNineDigits,
    #[error("does not pass the elfproef (11-check)")]
    ElfproefFailed,
}

impl Bsn {
    /// Parses a BSN: exactly nine ASCII digits whose weighted sum (9..2, and -1 for the last digit)
    /// is divisible by 11 and not zero.
    pub fn parse(input: &str) -> Result<Self, BsnError> {
        let bytes = input.as_bytes();
        if bytes.len() != 9 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(BsnError::NotNineDigits);
        }
        let mut digits = [0u8; 9];
        for (slot, byte) in digits.iter_mut().zip(bytes) {
            *slot = byte - b'0';
        }
        if !passes_elfproef(&digits) {
            return Err(BsnError::ElfproefFailed);
        }
        Ok(Bsn(digits))
    }

    pub(crate) fn as_digits(&self) -> &[u8; 9] {
        &self.0
    }
}

fn passes_elfproef(digits: &[u8; 9]) -> bool {
    let weighted: i32 = digits[..8]
        .iter()
        .zip((2..=9).rev())
        .map(|(d, w)| i32::from(*d) * w)
        .sum::<i32>()
        - i32::from(digits[8]);
    weighted != 0 && weighted % 11 == 0
}

/// Whether free text contains something that reads as a BSN: a run of exactly nine digits, with or
/// without spaces, dots or dashes between them, that is not part of a longer digit run and passes the
/// elfproef. Phone numbers (ten or more digits) and dates (eight) never match; a nine-digit number
/// that happens to pass the check is refused too — a false refusal costs a retype, a false pass
/// stores a citizen's number in clear for years.
pub fn reads_as_bsn(text: &str) -> bool {
    let mut digits: Vec<u8> = Vec::with_capacity(16);
    // Separator characters since the last digit: up to three (" - ") keep the run going.
    let mut separators = 0;
    for c in text.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_digit() {
            digits.push(c as u8 - b'0');
            separators = 0;
        } else if matches!(c, ' ' | '.' | '-' | '\u{a0}') && !digits.is_empty() && separators < 3 {
            separators += 1;
        } else if !digits.is_empty() {
            if let Ok(nine) = <[u8; 9]>::try_from(digits.as_slice()) {
                if passes_elfproef(&nine) {
                    return true;
                }
            }
            digits.clear();
            separators = 0;
        }
    }
    false
}

impl fmt::Debug for Bsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bsn(<redacted>)")
    }
}

/// Appends the elfproef check digit to eight digits, if one exists. For test data and the demo.
pub fn complete_bsn(first_eight: &str) -> Option<String> {
    let bytes = first_eight.as_bytes();
    if bytes.len() != 8 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    (0..=9u8).find_map(|last| {
        let candidate = format!("{first_eight}{last}");
        Bsn::parse(&candidate).ok().map(|_| candidate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_bsns_in_free_text() {
        for hit in [
            "123456782",
            "bsn 123456782 bellen",
            "123 456 782",
            "123.456.782",
            "12-34-56-782",
            "123 - 456 - 782",
            "zie 111222333.",
        ] {
            assert!(reads_as_bsn(hit), "{hit}");
        }
        for miss in [
            "050 367 0000",
            "+31 50 367 0000",
            "06-12345678",
            "123456781",
            "1234567820",
            "01.02.2026",
            "Wijkteam Oosterpark",
            "123456782a",
        ] {
            // The last one: a letter right after the run still ends it; nine digits, so it is a hit.
            assert_eq!(reads_as_bsn(miss), miss == "123456782a", "{miss}");
        }
    }

    proptest! {
        #[test]
        fn every_valid_bsn_is_found_with_any_separators(first in 0u32..100_000_000, sep in "[ .-]{0,1}") {
            if let Some(bsn) = complete_bsn(&format!("{first:08}")) {
                let spaced = format!("{}{sep}{}{sep}{}", &bsn[..3], &bsn[3..6], &bsn[6..]);
                prop_assert!(reads_as_bsn(&spaced));
                let in_text = format!("tekst {spaced} tekst");
                prop_assert!(reads_as_bsn(&in_text));
                // Part of a longer number: not a BSN.
                let longer = format!("{bsn}1");
                prop_assert!(!reads_as_bsn(&longer));
            }
        }
    }

    #[test]
    fn accepts_known_valid_numbers() {
        // 111222333 is the classic documentation example; 123456782 passes as well.
        for ok in ["111222333", "123456782", "999999990"] {
            assert!(Bsn::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_wrong_shape_and_checksum() {
        assert_eq!(Bsn::parse("12345678").unwrap_err(), BsnError::NotNineDigits);
        assert_eq!(
            Bsn::parse("1234567890").unwrap_err(),
            BsnError::NotNineDigits
        );
        assert_eq!(
            Bsn::parse("12345678a").unwrap_err(),
            BsnError::NotNineDigits
        );
        assert_eq!(
            Bsn::parse(" 11122233").unwrap_err(),
            BsnError::NotNineDigits
        );
        assert_eq!(
            Bsn::parse("123456789").unwrap_err(),
            BsnError::ElfproefFailed
        );
        assert_eq!(
            Bsn::parse("000000000").unwrap_err(),
            BsnError::ElfproefFailed
        );
    }

    #[test]
    fn debug_never_shows_digits() {
        let bsn = Bsn::parse("111222333").unwrap();
        assert!(!format!("{bsn:?}").contains("111"));
    }

    proptest! {
        #[test]
        fn any_single_digit_change_is_caught(prefix in "[0-9]{8}", pos in 0usize..9, delta in 1u8..10) {
            if let Some(valid) = complete_bsn(&prefix) {
                let mut bytes = valid.into_bytes();
                bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
                let changed = String::from_utf8(bytes).unwrap();
                prop_assert!(Bsn::parse(&changed).is_err());
            }
        }

        #[test]
        fn completion_always_yields_a_valid_bsn(prefix in "[0-9]{8}") {
            if let Some(valid) = complete_bsn(&prefix) {
                prop_assert!(Bsn::parse(&valid).is_ok());
                prop_assert!(valid.starts_with(&prefix));
            }
        }

        #[test]
        fn never_panics(input in ".{0,20}") {
            let _ = Bsn::parse(&input);
        }
    }
}
