//! Between the wire (signaalpoort-api) and the domain (signaalpoort-core). The only module that maps
//! proto enums.

use prost_types::Timestamp;
use signaalpoort_api::v1 as pb;
use signaalpoort_core::involvement::{Disclosure, MatchLevel};
use signaalpoort_core::{Basis, Category, ContactPoint, Purpose, Role};
use signaalpoort_store::SignalRow;
use time::OffsetDateTime;

use crate::error::Violations;

pub fn role_to_pb(r: Role) -> pb::Role {
    match r {
        Role::Gemeente => pb::Role::Gemeente,
        Role::Wij => pb::Role::Wij,
        Role::Ggd => pb::Role::Ggd,
        Role::VeiligThuis => pb::Role::VeiligThuis,
        Role::Jeugdhulp => pb::Role::Jeugdhulp,
        Role::Auditor => pb::Role::Auditor,
    }
}

pub fn role_from_pb(v: i32) -> Option<Role> {
    Some(match pb::Role::try_from(v).ok()? {
        pb::Role::Unspecified => return None,
        pb::Role::Gemeente => Role::Gemeente,
        pb::Role::Wij => Role::Wij,
        pb::Role::Ggd => Role::Ggd,
        pb::Role::VeiligThuis => Role::VeiligThuis,
        pb::Role::Jeugdhulp => Role::Jeugdhulp,
        pb::Role::Auditor => Role::Auditor,
    })
}

pub fn category_to_pb(c: Category) -> pb::Category {
    match c {
        Category::Parenting => pb::Category::Parenting,
        Category::Health => pb::Category::Health,
        Category::MentalHealth => pb::Category::MentalHealth,
        Category::Education => pb::Category::Education,
        Category::Finances => pb::Category::Finances,
        Category::Housing => pb::Category::Housing,
        Category::Addiction => pb::Category::Addiction,
        Category::YouthCare => pb::Category::YouthCare,
        Category::Safety => pb::Category::Safety,
    }
}

pub fn category_from_pb(v: i32) -> Option<Category> {
    Some(match pb::Category::try_from(v).ok()? {
        pb::Category::Unspecified => return None,
        pb::Category::Parenting => Category::Parenting,
        pb::Category::Health => Category::Health,
        pb::Category::MentalHealth => Category::MentalHealth,
        pb::Category::Education => Category::Education,
        pb::Category::Finances => Category::Finances,
        pb::Category::Housing => Category::Housing,
        pb::Category::Addiction => Category::Addiction,
        pb::Category::YouthCare => Category::YouthCare,
        pb::Category::Safety => Category::Safety,
    })
}

pub fn purpose_from_pb(v: i32) -> Option<Purpose> {
    Some(match pb::Purpose::try_from(v).ok()? {
        pb::Purpose::Unspecified => return None,
        pb::Purpose::CareCoordination => Purpose::CareCoordination,
        pb::Purpose::ChildSafety => Purpose::ChildSafety,
        pb::Purpose::CaseCoordination => Purpose::CaseCoordination,
        pb::Purpose::Audit => Purpose::Audit,
    })
}

pub fn purpose_to_pb(p: Purpose) -> pb::Purpose {
    match p {
        Purpose::CareCoordination => pb::Purpose::CareCoordination,
        Purpose::ChildSafety => pb::Purpose::ChildSafety,
        Purpose::CaseCoordination => pb::Purpose::CaseCoordination,
        Purpose::Audit => pb::Purpose::Audit,
    }
}

pub fn basis_to_pb(b: Basis) -> pb::Basis {
    match b {
        Basis::RoleRule => pb::Basis::RoleRule,
        Basis::Consent => pb::Basis::Consent,
        Basis::Safety => pb::Basis::Safety,
    }
}

/// Parses a required purpose field.
pub fn required_purpose(v: &mut Violations, field: &str, value: i32) -> Option<Purpose> {
    let p = purpose_from_pb(value);
    if p.is_none() {
        v.add(field, "is required: PURPOSE_CARE_COORDINATION, PURPOSE_CHILD_SAFETY or PURPOSE_CASE_COORDINATION");
    }
    p
}

pub fn ts(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    }
}

pub fn from_ts(t: &Timestamp) -> Result<OffsetDateTime, &'static str> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err("has out-of-range nanos");
    }
    OffsetDateTime::from_unix_timestamp(t.seconds)
        .map(|d| d + time::Duration::nanoseconds(i64::from(t.nanos)))
        .map_err(|_| "is out of range")
}

pub fn contact_to_pb(c: &ContactPoint) -> pb::ContactPoint {
    pb::ContactPoint {
        team: c.team.clone(),
        phone: c.phone.clone(),
        email: c.email.clone().unwrap_or_default(),
    }
}

/// Parses a required contact point, reporting each bad sub-field.
pub fn contact_from_pb(
    v: &mut Violations,
    field: &str,
    c: Option<&pb::ContactPoint>,
) -> Option<ContactPoint> {
    let Some(c) = c else {
        v.add(field, "is required: how the involved team is reached");
        return None;
    };
    match ContactPoint::parse(&c.team, &c.phone, &c.email) {
        Ok(c) => Some(c),
        Err(errors) => {
            for e in errors {
                v.add(format!("{field}.{}", e.field), e.problem);
            }
            None
        }
    }
}

pub fn signal_to_pb(s: &SignalRow) -> pb::Signal {
    pb::Signal {
        signal_id: s.id.clone(),
        category: category_to_pb(s.category) as i32,
        contact: Some(contact_to_pb(&s.contact)),
        registered_at: Some(ts(s.registered_at)),
        refreshed_at: Some(ts(s.refreshed_at)),
        expires_at: Some(ts(s.expires_at)),
    }
}

/// The name shown for a sensitive involvement seen without a safety need.
pub const WITHHELD_NAME: &str = "een betrokken professional";

pub fn disclosure_to_pb(d: &Disclosure) -> pb::Involvement {
    pb::Involvement {
        agency: Some(match &d.agency {
            Some(a) => pb::AgencyRef {
                oin: a.oin.to_string(),
                name: a.name.clone(),
                role: role_to_pb(a.role) as i32,
            },
            None => withheld_agency(),
        }),
        contact: Some(contact_to_pb(&d.contact)),
        category: d.category.map_or(pb::Category::Unspecified, category_to_pb) as i32,
        since: Some(ts(d.since)),
        level: match d.level {
            MatchLevel::Subject => pb::MatchLevel::Subject,
            MatchLevel::Household => pb::MatchLevel::Household,
        } as i32,
        withheld: d.withheld(),
        basis: basis_to_pb(d.basis) as i32,
        consent_id: d.consent_id.clone().unwrap_or_default(),
    }
}

/// An agency a viewer may not know of: a professional is involved, nothing says which.
pub fn withheld_agency() -> pb::AgencyRef {
    pb::AgencyRef {
        oin: String::new(),
        name: WITHHELD_NAME.to_owned(),
        role: pb::Role::Unspecified as i32,
    }
}

pub fn agency_to_pb(a: &signaalpoort_core::Agency) -> pb::AgencyRef {
    pb::AgencyRef {
        oin: a.oin.to_string(),
        name: a.name.clone(),
        role: role_to_pb(a.role) as i32,
    }
}

/// Parses a required opaque id (signal, consent, proposal).
pub fn required_id(v: &mut Violations, field: &str, value: &str) -> Option<String> {
    if value.is_empty()
        || value.len() > 64
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        v.add(field, "is required: an id as returned by the gateway");
        None
    } else if signaalpoort_core::Bsn::parse(value).is_ok() {
        // Ids are written to the access log: a BSN typed here would stay there for years. Only a
        // value that is itself a BSN: a gateway id (a UUID) can hold nine digits across a dash.
        v.add(
            field,
            "must not contain a BSN; pass an id as returned by the gateway",
        );
        None
    } else {
        Some(value.to_owned())
    }
}
