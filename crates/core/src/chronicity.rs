//! Involvement history in counts only, and the chronicity indicator: an aid to recognise that
//! problems recur — never a score about a person. The rule is a pure function of aggregated counts
//! per calendar quarter; its thresholds come from configuration and its output names the facts that
//! triggered it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::{Date, Month};

use crate::Category;

/// A calendar quarter, e.g. 2025-Q3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quarter {
    pub year: i32,
    /// 1..=4
    pub q: u8,
}

impl Quarter {
    pub fn of(date: Date) -> Quarter {
        Quarter {
            year: date.year(),
            q: (u8::from(date.month()) - 1) / 3 + 1,
        }
    }

    pub fn first_day(self) -> Date {
        let month = Month::try_from((self.q - 1) * 3 + 1).unwrap_or(Month::January);
        Date::from_calendar_date(self.year, month, 1).unwrap_or(Date::MIN)
    }

    /// The quarter `n` quarters before this one.
    pub fn minus(self, n: u32) -> Quarter {
        let index = i64::from(self.year) * 4 + i64::from(self.q - 1) - i64::from(n);
        Quarter {
            year: index.div_euclid(4) as i32,
            q: index.rem_euclid(4) as u8 + 1,
        }
    }

    /// The quarter after this one.
    pub fn next(self) -> Quarter {
        let index = i64::from(self.year) * 4 + i64::from(self.q - 1) + 1;
        Quarter {
            year: index.div_euclid(4) as i32,
            q: index.rem_euclid(4) as u8 + 1,
        }
    }

    /// Parses a label made by [`Quarter::label`].
    pub fn parse(label: &str) -> Option<Quarter> {
        let (year, q) = label.split_once("-Q")?;
        let q: u8 = q.parse().ok()?;
        (1..=4).contains(&q).then_some(Quarter {
            year: year.parse().ok()?,
            q,
        })
    }

    pub fn label(self) -> String {
        format!("{}-Q{}", self.year, self.q)
    }
}

/// What the history keeps for one household and quarter: counts, never a link to a signal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarterCounts {
    /// Distinct agencies with a signal active in the quarter.
    pub agencies: u32,
    pub categories: BTreeSet<Category>,
    pub registered: u32,
    pub ended: u32,
    /// Safety signals registered in the quarter.
    pub safety_signals: u32,
}

/// Thresholds of the indicator (configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChronicityThresholds {
    /// How many distinct agencies make a quarter count as "several agencies involved".
    pub min_agencies: u32,
    /// In how many quarters of the window that must hold ("recurring over more than a year": 5).
    pub min_quarters: u32,
    /// How many quarters back the rules look (8 = two years).
    pub window_quarters: u32,
    /// Safety signals within the window that count as "repeated".
    pub repeated_safety_signals: u32,
}

impl Default for ChronicityThresholds {
    fn default() -> Self {
        ChronicityThresholds {
            min_agencies: 2,
            min_quarters: 5,
            window_quarters: 8,
            repeated_safety_signals: 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator {
    pub indicated: bool,
    /// Fixed wording naming the facts and the threshold, e.g. "2 or more agencies involved in 6 of
    /// the last 8 quarters (threshold: 5)".
    pub triggered_by: Vec<String>,
}

/// The indicator at `current` over `history` (quarters without an entry had no involvement).
pub fn chronicity(
    history: &BTreeMap<Quarter, QuarterCounts>,
    current: Quarter,
    t: ChronicityThresholds,
) -> Indicator {
    let window: Vec<Quarter> = (0..t.window_quarters).map(|n| current.minus(n)).collect();
    let in_window = || window.iter().filter_map(|q| history.get(q));
    let mut triggered_by = Vec::new();
    let busy = in_window().filter(|c| c.agencies >= t.min_agencies).count() as u32;
    if busy >= t.min_quarters {
        triggered_by.push(format!(
            "{} or more agencies involved in {busy} of the last {} quarters (threshold: {})",
            t.min_agencies, t.window_quarters, t.min_quarters
        ));
    }
    let safety: u32 = in_window().map(|c| c.safety_signals).sum();
    if safety >= t.repeated_safety_signals {
        triggered_by.push(format!(
            "{safety} safety signals in the last {} quarters (threshold: {})",
            t.window_quarters, t.repeated_safety_signals
        ));
    }
    Indicator {
        indicated: !triggered_by.is_empty(),
        triggered_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn counts(agencies: u32, safety: u32) -> QuarterCounts {
        QuarterCounts {
            agencies,
            safety_signals: safety,
            ..Default::default()
        }
    }

    #[test]
    fn quarters() {
        assert_eq!(
            Quarter::of(date!(2025 - 08 - 15)),
            Quarter { year: 2025, q: 3 }
        );
        assert_eq!(
            Quarter { year: 2025, q: 1 }.minus(1),
            Quarter { year: 2024, q: 4 }
        );
        assert_eq!(
            Quarter { year: 2025, q: 3 }.minus(9),
            Quarter { year: 2023, q: 2 }
        );
        assert_eq!(
            Quarter { year: 2025, q: 4 }.first_day(),
            date!(2025 - 10 - 01)
        );
        assert_eq!(Quarter { year: 2025, q: 4 }.label(), "2025-Q4");
    }

    #[test]
    fn recurring_involvement_over_more_than_a_year() {
        let now = Quarter { year: 2026, q: 2 };
        let t = ChronicityThresholds::default();
        // Four busy quarters: a year, not more. Not indicated.
        let mut h: BTreeMap<Quarter, QuarterCounts> =
            (0..4).map(|n| (now.minus(n), counts(3, 0))).collect();
        assert!(!chronicity(&h, now, t).indicated);
        // A fifth busy quarter within the two-year window, with a gap between: indicated.
        h.insert(now.minus(6), counts(2, 0));
        let ind = chronicity(&h, now, t);
        assert!(ind.indicated);
        assert_eq!(
            ind.triggered_by,
            ["2 or more agencies involved in 5 of the last 8 quarters (threshold: 5)"]
        );
        // Outside the window it no longer counts.
        let later = Quarter { year: 2027, q: 1 };
        assert!(!chronicity(&h, later, t).indicated);
        // One agency alone, however long, is not "several agencies".
        let lonely: BTreeMap<Quarter, QuarterCounts> =
            (0..8).map(|n| (now.minus(n), counts(1, 0))).collect();
        assert!(!chronicity(&lonely, now, t).indicated);
    }

    #[test]
    fn repeated_safety_signals() {
        let now = Quarter { year: 2026, q: 2 };
        let h: BTreeMap<Quarter, QuarterCounts> =
            [(now.minus(1), counts(1, 1)), (now.minus(5), counts(1, 1))].into();
        let ind = chronicity(&h, now, ChronicityThresholds::default());
        assert_eq!(
            ind.triggered_by,
            ["2 safety signals in the last 8 quarters (threshold: 2)"]
        );
    }
}
