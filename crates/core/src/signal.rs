//! Signal lifetimes (Jeugdwet 7.1.4.5): a signal ends at its expiry, at most two years after it was
//! (re)registered, and at the latest on the day the young person turns 23.

use time::{Date, Duration, OffsetDateTime};

use crate::InvalidValue;

/// The longest a signal may live without being registered again.
pub const MAX_SIGNAL_LIFETIME: Duration = Duration::days(730);

/// Computes when a signal registered `now` ends.
///
/// `requested` is the caller's wish (default otherwise), capped at two years and — for a young
/// person, whose birth date the municipality declared — at the 23rd birthday. A signal on an adult
/// family member (23 or older: household links bring in parents) has only the two-year cap. A
/// requested end in the past is an error.
pub fn signal_expiry(
    now: OffsetDateTime,
    requested: Option<OffsetDateTime>,
    default_lifetime: Duration,
    birth_date: Option<Date>,
) -> Result<OffsetDateTime, InvalidValue> {
    let cap = now + MAX_SIGNAL_LIFETIME;
    let mut expiry = match requested {
        Some(t) if t <= now => return Err(InvalidValue("must be in the future")),
        Some(t) if t > cap => return Err(InvalidValue("must be at most two years ahead")),
        Some(t) => t,
        None => now + default_lifetime.min(MAX_SIGNAL_LIFETIME),
    };
    if let Some(born) = birth_date {
        let end = birthday(born, 23).midnight().assume_utc();
        if end > now {
            expiry = expiry.min(end);
        }
    }
    Ok(expiry)
}

/// The date someone born on `born` turns `years` (29 February falls on 28 February).
pub fn birthday(born: Date, years: i32) -> Date {
    let year = born.year() + years;
    Date::from_calendar_date(year, born.month(), born.day())
        .or_else(|_| Date::from_calendar_date(year, born.month(), born.day() - 1))
        .unwrap_or(born)
}

/// Age in whole years on `on`.
pub fn age_on(born: Date, on: Date) -> i32 {
    let mut age = on.year() - born.year();
    if on < birthday(born, age) {
        age -= 1;
    }
    age
}

/// Parses a YYYY-MM-DD birth date that is not in the future.
pub fn parse_birth_date(s: &str, today: Date) -> Result<Date, InvalidValue> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = Date::parse(s, &format).map_err(|_| InvalidValue("must be a date as YYYY-MM-DD"))?;
    if date > today {
        return Err(InvalidValue("must not be in the future"));
    }
    if today.year() - date.year() > 130 {
        return Err(InvalidValue("is implausibly long ago"));
    }
    Ok(date)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn default_and_caps() {
        let now = datetime!(2026-01-10 12:00 UTC);
        let e = signal_expiry(now, None, Duration::days(365), None).unwrap();
        assert_eq!(e, datetime!(2027-01-10 12:00 UTC));
        assert!(signal_expiry(
            now,
            Some(now + Duration::days(731)),
            Duration::days(365),
            None
        )
        .is_err());
        assert!(signal_expiry(
            now,
            Some(now - Duration::seconds(1)),
            Duration::days(365),
            None
        )
        .is_err());
        // A default longer than two years is capped, not an error.
        let e = signal_expiry(now, None, Duration::days(5000), None).unwrap();
        assert_eq!(e, now + MAX_SIGNAL_LIFETIME);
    }

    #[test]
    fn ends_on_23rd_birthday() {
        let now = datetime!(2026-01-10 12:00 UTC);
        let e = signal_expiry(now, None, Duration::days(730), Some(date!(2003 - 06 - 01))).unwrap();
        assert_eq!(e, datetime!(2026-06-01 0:00 UTC));
        // A parent (an adult household member) keeps the two-year cap only.
        assert_eq!(
            signal_expiry(now, None, Duration::days(730), Some(date!(1985 - 06 - 01))),
            Ok(now + MAX_SIGNAL_LIFETIME)
        );
    }

    #[test]
    fn ages_and_leap_days() {
        assert_eq!(age_on(date!(2014 - 03 - 15), date!(2026 - 03 - 14)), 11);
        assert_eq!(age_on(date!(2014 - 03 - 15), date!(2026 - 03 - 15)), 12);
        assert_eq!(birthday(date!(2012 - 02 - 29), 1), date!(2013 - 02 - 28));
        assert!(parse_birth_date("2030-01-01", date!(2026 - 01 - 01)).is_err());
        assert!(parse_birth_date("2014-13-01", date!(2026 - 01 - 01)).is_err());
    }
}
