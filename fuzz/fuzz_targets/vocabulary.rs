//! The small validated values every request is made of: OIN, actor id, request id, references,
//! contact points, the safety justification, birth dates and quarter labels. Never panic, and
//! what is accepted keeps the rules the contract states: identifiers and free text never read as
//! a BSN (a request id may not *be* one), an OIN is 20 digits, labels round-trip.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use signaalpoort_core::chronicity::Quarter;
use signaalpoort_core::signal::parse_birth_date;
use signaalpoort_core::{
    parse_reference, reads_as_bsn, ActorId, Bsn, ContactPoint, Justification, Oin, RequestId,
};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    text: &'a str,
    phone: &'a str,
    email: &'a str,
    days_since_epoch: u16,
}

fuzz_target!(|input: Input<'_>| {
    let s = input.text;
    if let Ok(oin) = Oin::parse(s) {
        assert!(oin.as_str().len() == 20 && oin.as_str().bytes().all(|b| b.is_ascii_digit()));
    }
    if let Ok(actor) = ActorId::parse(s) {
        let a = actor.as_str();
        assert!(!a.is_empty() && a.len() <= ActorId::MAX_LEN);
        assert!(!reads_as_bsn(a), "actor id reads as a BSN: {a:?}");
        assert!(!ActorId::is_reserved(a));
    }
    if let Ok(Some(id)) = RequestId::parse_optional(s) {
        let digits: String = id
            .as_str()
            .chars()
            .filter(|c| !matches!(c, ' ' | '.' | '-'))
            .collect();
        assert!(Bsn::parse(&digits).is_err(), "request id is a BSN: {id:?}");
    }
    if let Ok(reference) = parse_reference(s, 64, b"._-") {
        assert!(reference.len() <= 64);
        assert!(!reads_as_bsn(&reference), "reference reads as a BSN: {reference:?}");
    }
    if let Ok(contact) = ContactPoint::parse(s, input.phone, input.email) {
        assert!(!reads_as_bsn(&contact.team));
        assert!(!reads_as_bsn(&contact.phone));
        assert!(!contact.email.as_deref().is_some_and(reads_as_bsn));
    }
    if let Ok(Some(j)) = Justification::parse_optional(s) {
        let n = j.as_str().chars().count();
        assert!((Justification::MIN_CHARS..=Justification::MAX_CHARS).contains(&n));
        assert!(!reads_as_bsn(j.as_str()), "justification reads as a BSN");
    }
    let today = time::Date::from_julian_day(2_440_588 + i32::from(input.days_since_epoch))
        .expect("a date after 1970");
    if let Ok(born) = parse_birth_date(s, today) {
        assert!(born <= today);
    }
    if let Some(q) = Quarter::parse(s) {
        let label = q.label();
        assert_eq!(Quarter::parse(&label).map(Quarter::label), Some(label));
    }
});
