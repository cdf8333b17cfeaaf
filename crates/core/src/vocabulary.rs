//! The closed sets and small validated values every other module speaks in. Each enum has a stable
//! lowercase code used in storage and the access log, so renaming a variant never rewrites history.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! code_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable code used in storage and logs.
            pub fn code(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }

            pub fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.code())
            }
        }
    };
}

code_enum!(
    /// What an agency is; from the registry, never from a request.
    Role {
        Gemeente = "gemeente",
        Wij = "wij",
        Ggd = "ggd",
        VeiligThuis = "veilig_thuis",
        Jeugdhulp = "jeugdhulp",
        Auditor = "auditor",
    }
);

code_enum!(
    /// Closed set of signal categories; a signal never carries free text.
    Category {
        Parenting = "parenting",
        Health = "health",
        MentalHealth = "mental_health",
        Education = "education",
        Finances = "finances",
        Housing = "housing",
        Addiction = "addiction",
        YouthCare = "youth_care",
        Safety = "safety",
    }
);

code_enum!(
    /// Why a call is made.
    Purpose {
        CareCoordination = "care_coordination",
        ChildSafety = "child_safety",
        CaseCoordination = "case_coordination",
        Audit = "audit",
    }
);

code_enum!(
    /// The ground on which something was allowed.
    Basis {
        RoleRule = "role_rule",
        Consent = "consent",
        Safety = "safety",
    }
);

code_enum!(
    /// Why a call was denied. The code, upper-cased, is the google.rpc.ErrorInfo reason.
    DenyReason {
        UnknownAgency = "unknown_agency",
        RoleNotPermitted = "role_not_permitted",
        PurposeNotAllowed = "purpose_not_allowed",
        NotInvolved = "not_involved",
        ConsentMissing = "consent_missing",
        ConsentExpired = "consent_expired",
        ConsentWithdrawn = "consent_withdrawn",
        ConsentWrongPurpose = "consent_wrong_purpose",
        JustificationRequired = "justification_required",
        AgeRuleNotMet = "age_rule_not_met",
        CertificateRevoked = "certificate_revoked",
        NotCoordinator = "not_coordinator",
    }
);

impl DenyReason {
    /// The ErrorInfo reason: UPPER_SNAKE of the code.
    pub fn error_reason(self) -> String {
        self.code().to_ascii_uppercase()
    }

    /// A sentence a developer at an agency can act on.
    pub fn explanation(self) -> &'static str {
        match self {
            DenyReason::UnknownAgency => {
                "the client certificate's OIN is not in the gateway's agency registry"
            }
            DenyReason::RoleNotPermitted => "the agency's role may not perform this action",
            DenyReason::PurposeNotAllowed => "this action is not allowed for the given purpose",
            DenyReason::NotInvolved => {
                "the agency has no active signal on this person or household"
            }
            DenyReason::ConsentMissing => {
                "no consent covers this exchange for this purpose, and no safety basis was invoked"
            }
            DenyReason::ConsentExpired => {
                "the consent covering this exchange has expired; record a renewed consent"
            }
            DenyReason::ConsentWithdrawn => "the consent covering this exchange was withdrawn",
            DenyReason::ConsentWrongPurpose => {
                "a consent exists, but it does not cover this purpose"
            }
            DenyReason::JustificationRequired => {
                "acting on the safety basis needs a written justification of 20 to 1000 characters"
            }
            DenyReason::AgeRuleNotMet => {
                "the consent does not satisfy the Dutch age rules (Jeugdwet 7.3.5)"
            }
            DenyReason::CertificateRevoked => "the client certificate has been revoked",
            DenyReason::NotCoordinator => "only the coordinator or the agency asked may do this",
        }
    }
}

impl Role {
    /// Roles that work with families and may register signals.
    pub const CARE: &'static [Role] = &[
        Role::Gemeente,
        Role::Wij,
        Role::Ggd,
        Role::VeiligThuis,
        Role::Jeugdhulp,
    ];
}

/// Why a small value was rejected; the server turns these into field violations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub &'static str);

/// Organisatie-identificatienummer: 20 ASCII digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Oin(String);

impl Oin {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Oin(s.to_owned()))
        } else {
            Err(InvalidValue("must be an OIN of exactly 20 digits"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Oin {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Oin::parse(&s)
    }
}
impl From<Oin> for String {
    fn from(o: Oin) -> String {
        o.0
    }
}
impl fmt::Display for Oin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bounded_token(
    s: &str,
    max: usize,
    extra: &[u8],
    what: &'static str,
) -> Result<String, InvalidValue> {
    if s.is_empty() || s.len() > max {
        return Err(InvalidValue(what));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        return Err(InvalidValue(what));
    }
    Ok(s.to_owned())
}

/// Request ids are often UUIDs, whose digit groups can line up into nine digits
/// across a dash: for them only a value that is itself a BSN is refused, so a generated id is
/// never turned down by chance.
fn refuse_whole_bsn(s: &str) -> Result<(), InvalidValue> {
    let digits: String = s
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-'))
        .collect();
    if crate::Bsn::parse(&digits).is_ok() {
        return Err(InvalidValue("must not be a BSN"));
    }
    Ok(())
}

/// Every identifier and free-text field is logged or shown to others: none may carry a BSN.
fn refuse_bsn(s: &str) -> Result<(), InvalidValue> {
    if crate::reads_as_bsn(s) {
        return Err(InvalidValue(
            "must not contain a BSN (nine digits passing the elfproef, with or without separators)",
        ));
    }
    Ok(())
}

/// Characters that make text shown to another agency read differently from what it is: bidi
/// controls (which reorder it) and zero-width characters (which hide content between letters).
fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// The professional on whose behalf a call is made: pseudonymous staff id, logged, never trusted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ActorId(String);

impl ActorId {
    pub const MAX_LEN: usize = 64;
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let id = bounded_token(
            s,
            Self::MAX_LEN,
            b"._:-",
            "must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'",
        )?;
        // Logged with every record: no BSN anywhere in it (staff ids are not UUIDs).
        refuse_bsn(&id)?;
        if Self::is_reserved(&id) {
            return Err(InvalidValue(
                "is reserved for the gateway's own records (system, system:*)",
            ));
        }
        Ok(ActorId(id))
    }

    /// The actor the gateway writes its own records under (jobs, purges, checkpoints).
    pub const SYSTEM: &'static str = "system";

    /// Ids callers may not use, so a record under `system` is always the gateway's own.
    pub fn is_reserved(id: &str) -> bool {
        let lower = id.to_ascii_lowercase();
        lower == Self::SYSTEM || lower.starts_with("system:")
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client-chosen idempotency key (AIP-155).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RequestId(String);

impl RequestId {
    /// Empty input means "no request id".
    pub fn parse_optional(s: &str) -> Result<Option<Self>, InvalidValue> {
        if s.is_empty() {
            return Ok(None);
        }
        let id = bounded_token(
            s,
            64,
            b"._:-",
            "must be at most 64 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'",
        )?;
        refuse_whole_bsn(&id)?;
        Ok(Some(RequestId(id)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An agency's own reference for a household or a document: never personal data.
pub fn parse_reference(s: &str, max: usize, extra: &[u8]) -> Result<String, InvalidValue> {
    let reference = bounded_token(
        s,
        max,
        extra,
        "must be a short reference of letters, digits and . _ - (no names or addresses)",
    )?;
    refuse_bsn(&reference)?;
    Ok(reference)
}

/// How to reach the involved team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPoint {
    pub team: String,
    pub phone: String,
    pub email: Option<String>,
}

/// Which field of a contact point was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactError {
    pub field: &'static str,
    pub problem: &'static str,
}

impl ContactPoint {
    pub fn parse(team: &str, phone: &str, email: &str) -> Result<Self, Vec<ContactError>> {
        let mut problems = Vec::new();
        let team = team.trim();
        let team_len = team.chars().count();
        if team_len == 0 || team_len > 100 || team.chars().any(char::is_control) {
            problems.push(ContactError {
                field: "team",
                problem: "must be 1 to 100 printable characters",
            });
        } else if team.chars().any(is_deceptive) {
            problems.push(ContactError {
                field: "team",
                problem: "must not contain bidi controls or zero-width characters",
            });
        } else if crate::reads_as_bsn(team) {
            problems.push(ContactError {
                field: "team",
                problem: BSN_PROBLEM,
            });
        }
        let phone = phone.trim();
        let phone_ok = (6..=20).contains(&phone.len())
            && phone
                .bytes()
                .all(|b| b.is_ascii_digit() || b" +-()".contains(&b))
            && phone.bytes().filter(u8::is_ascii_digit).count() >= 6;
        if !phone_ok {
            problems.push(ContactError {
                field: "phone",
                problem: "must be 6 to 20 characters of digits, spaces, '+', '-' and parentheses",
            });
        } else if crate::reads_as_bsn(phone) {
            problems.push(ContactError {
                field: "phone",
                problem: BSN_PROBLEM,
            });
        }
        let email = email.trim();
        let email = if email.is_empty() {
            None
        } else {
            let ok = email.len() <= 254
                && email
                    .split_once('@')
                    .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
                && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                problems.push(ContactError {
                    field: "email",
                    problem: "must be a functional mailbox address of at most 254 characters",
                });
            } else if email.chars().any(is_deceptive) {
                problems.push(ContactError {
                    field: "email",
                    problem: "must not contain bidi controls or zero-width characters",
                });
            } else if crate::reads_as_bsn(email) {
                problems.push(ContactError {
                    field: "email",
                    problem: BSN_PROBLEM,
                });
            }
            Some(email.to_owned())
        };
        if problems.is_empty() {
            Ok(ContactPoint {
                team: team.to_owned(),
                phone: phone.to_owned(),
                email,
            })
        } else {
            Err(problems)
        }
    }
}

const BSN_PROBLEM: &str =
    "must not contain a BSN (nine digits passing the elfproef, with or without separators)";

/// An agency as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agency {
    pub oin: Oin,
    pub name: String,
    pub role: Role,
}

/// The written justification of a safety-basis call: the one free text of the system.
#[derive(Clone, PartialEq, Eq)]
pub struct Justification(String);

impl Justification {
    pub const MIN_CHARS: usize = 20;
    pub const MAX_CHARS: usize = 1000;

    /// Empty input means "none given".
    pub fn parse_optional(s: &str) -> Result<Option<Self>, InvalidValue> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        let n = trimmed.chars().count();
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&n) {
            return Err(InvalidValue("must be 20 to 1000 characters"));
        }
        if trimmed.chars().any(|c| c.is_control() && c != '\n') {
            return Err(InvalidValue("must not contain control characters"));
        }
        if trimmed.chars().any(is_deceptive) {
            return Err(InvalidValue(
                "must not contain bidi controls or zero-width characters",
            ));
        }
        // Kept in the hash-chained log for years: a BSN typed here could never be removed.
        refuse_bsn(trimmed)?;
        Ok(Some(Justification(trimmed.to_owned())))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Justification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Justification({} chars)", self.0.chars().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for r in Role::ALL {
            assert_eq!(Role::from_code(r.code()), Some(*r));
        }
        for c in Category::ALL {
            assert_eq!(Category::from_code(c.code()), Some(*c));
        }
        assert_eq!(DenyReason::ConsentMissing.error_reason(), "CONSENT_MISSING");
    }

    #[test]
    fn contact_point_reports_each_bad_field() {
        let errs = ContactPoint::parse("", "12", "not-an-email").unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["team", "phone", "email"]);
        let ok = ContactPoint::parse("Wijkteam Oost", "+31 50 123 4567", "oost@wij.nl").unwrap();
        let bsn = ContactPoint::parse("Team 123 456 782", "050 367 0000", "").unwrap_err();
        assert_eq!(bsn[0].field, "team");
        let bidi = ContactPoint::parse("Team \u{202E}tsoO", "050 367 0000", "a\u{200B}b@wij.nl")
            .unwrap_err();
        assert_eq!(
            bidi.iter().map(|e| e.field).collect::<Vec<_>>(),
            ["team", "email"]
        );
        assert_eq!(ok.email.as_deref(), Some("oost@wij.nl"));
    }

    #[test]
    fn actor_and_justification_bounds() {
        assert!(ActorId::parse("").is_err());
        assert!(ActorId::parse(&"a".repeat(65)).is_err());
        assert!(ActorId::parse("medewerker-0042").is_ok());
        assert!(ActorId::parse("x y").is_err());
        assert!(ActorId::parse("system").is_err());
        assert!(ActorId::parse("SYSTEM:purge").is_err());
        assert!(ActorId::parse("systeembeheer-1").is_ok());
        assert!(ActorId::parse("123456782").is_err());
        assert!(RequestId::parse_optional("123-456-782").is_err());
        // A UUID whose digit groups line up into nine digits is still a fine request id.
        assert!(RequestId::parse_optional("0a1b2c3d-1234-5678-2abc-def012345678").is_ok());
        assert!(parse_reference("dossier.123.456.782", 100, b"._:/-").is_err());
        assert!(Justification::parse_optional("").unwrap().is_none());
        assert!(Justification::parse_optional("too short").is_err());
        assert!(Justification::parse_optional(&"x".repeat(1001)).is_err());
        assert!(
            Justification::parse_optional("Kind meldt geweld door vader, acuut gevaar")
                .unwrap()
                .is_some()
        );
        assert!(
            Justification::parse_optional("Kind met bsn 123.456.782 meldt geweld door vader")
                .is_err()
        );
    }
}
