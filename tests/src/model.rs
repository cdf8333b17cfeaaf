//! A small, pure reference model of who may learn what (issue 12, SPEC-12.md), written from the
//! specification without reusing gateway code, so it can catch the implementation's mistakes.
//!
//! State: agencies (one per role), signals, households with members, protected flags and birth
//! dates, consents (about whom, by whom, for what, for whom, until when, withdrawn), time, and the
//! potential notifications with their per-recipient cursors. For every question an agency can ask,
//! the model answers what it must receive: the answer or the exact denial, the notifications due on
//! a read (numbered densely per recipient, exactly once, in order), the consents it may list.
//!
//! Only `std` and `time`: the model is also compiled into core's tests (`#[path]` include), which
//! hold core's pure disclosure functions to it.

use std::collections::{BTreeMap, BTreeSet};

use time::{Date, Duration, OffsetDateTime};

/// An agency; the dev PKI has exactly one per role, so the agency is its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Agency {
    Gemeente,
    Wij,
    Ggd,
    VeiligThuis,
    Jeugdhulp,
}

impl Agency {
    pub const ALL: [Agency; 5] = [
        Agency::Gemeente,
        Agency::Wij,
        Agency::Ggd,
        Agency::VeiligThuis,
        Agency::Jeugdhulp,
    ];

    /// Roles that may invoke the safety basis (meldcode professionals and Veilig Thuis).
    pub fn may_invoke_safety(self) -> bool {
        !matches!(self, Agency::Gemeente)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    Parenting,
    Health,
    MentalHealth,
    Finances,
    YouthCare,
    Safety,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    CareCoordination,
    ChildSafety,
    CaseCoordination,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Basis {
    Consent,
    Safety,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Subject,
    Household,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Match,
    MatchEnded,
}

/// A person of the population, by index; the driver knows their BSNs.
pub type Person = usize;
/// A signal by registration order (the driver maps it to the gateway's id).
pub type SignalIx = usize;
/// A consent by recording order.
pub type ConsentIx = usize;

/// gRPC codes the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    PermissionDenied,
    NotFound,
}

/// An expected error: code, and the ErrorInfo reasons any one of which is right (empty: not
/// checked), or the field a BadRequest must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: Code,
    pub reasons: BTreeSet<&'static str>,
    pub field: Option<&'static str>,
}

impl Failure {
    pub fn denied(reason: &'static str) -> Failure {
        Failure {
            code: Code::PermissionDenied,
            reasons: [reason].into(),
            field: None,
        }
    }
    pub fn not_found() -> Failure {
        Failure {
            code: Code::NotFound,
            reasons: BTreeSet::new(),
            field: None,
        }
    }
    pub fn invalid(field: &'static str) -> Failure {
        Failure {
            code: Code::InvalidArgument,
            reasons: BTreeSet::new(),
            field: Some(field),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Givers {
    pub subject: bool,
    pub parent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    pub agency: Agency,
    pub person: Person,
    pub category: Category,
    pub team: String,
    pub registered: OffsetDateTime,
    pub expires: OffsetDateTime,
    /// Withdrawn, or ended by expiry when the gateway's purge ran (then = `expires`).
    pub ended: Option<OffsetDateTime>,
}

impl Signal {
    pub fn active(&self, t: OffsetDateTime) -> bool {
        self.ended.is_none_or(|e| e > t) && t < self.expires
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub person: Person,
    pub protected: bool,
    pub birth: Option<Date>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Household {
    pub members: Vec<Member>,
    /// Declaration order: the newest live declaration's birth date wins.
    pub declared: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub recorder: Agency,
    pub subject: Person,
    pub include_household: bool,
    pub givers: Givers,
    pub purposes: BTreeSet<Purpose>,
    /// Named by role.
    pub roles: BTreeSet<Agency>,
    /// Named by OIN.
    pub oins: BTreeSet<Agency>,
    pub recorded: OffsetDateTime,
    pub valid_until: OffsetDateTime,
    pub withdrawn: Option<OffsetDateTime>,
}

impl Consent {
    pub fn names(&self, a: Agency) -> bool {
        self.roles.contains(&a) || self.oins.contains(&a)
    }
    pub fn active(&self, t: OffsetDateTime) -> bool {
        self.withdrawn.is_none_or(|w| w > t) && self.valid_until > t
    }
}

/// A potential notification: one recipient signal, one other signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The change that created it; notes of one change have no specified order among them.
    pub event: u64,
    pub recipient: Agency,
    pub recipient_signal: SignalIx,
    pub kind: Kind,
    pub other_signal: SignalIx,
    pub level: Level,
    /// Given at its first delivery.
    pub cursor: Option<u64>,
    /// Removed by the purge (a week after one of its signals ended): gone for every read.
    pub purged: bool,
}

/// What a viewer may see of one other involvement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub signal: SignalIx,
    /// `None`: withheld as sensitive ("een betrokken professional", no OIN, no role).
    pub agency: Option<Agency>,
    pub category: Option<Category>,
    pub team: String,
    pub level: Level,
    pub basis: Basis,
    /// Any one of these is a right `consent_id` (empty for the safety basis).
    pub consents: BTreeSet<ConsentIx>,
    /// A consent covers it and the safety basis holds too: either may be named.
    pub safety_too: bool,
}

/// The call-level basis of a query or of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallBasis {
    pub basis: Basis,
    pub consents: BTreeSet<ConsentIx>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub basis: CallBasis,
    /// Sorted by signal.
    pub involvements: Vec<Seen>,
}

/// One notification due on a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub note: usize,
    pub cursor: u64,
    /// Notes numbered on this read from one change share a group: their order is free.
    pub group: Option<u64>,
    pub kind: Kind,
    pub your_signal: SignalIx,
    pub other: Seen,
    pub basis: CallBasis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub due: Vec<Due>,
    pub cursor: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub signal: SignalIx,
    pub refreshed: bool,
    pub expires: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub consent: ConsentIx,
    pub renew_by: Option<Date>,
}

/// One consent as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub consent: ConsentIx,
    /// `None`: withheld.
    pub recorded_by: Option<Agency>,
}

/// The request of a safety-basis call: purpose and whether a justification is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub purpose: Purpose,
    pub justified: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub now: Option<OffsetDateTime>,
    pub signals: Vec<Signal>,
    pub households: BTreeMap<String, Household>,
    pub consents: Vec<Consent>,
    pub notes: Vec<Note>,
    pub next_cursor: BTreeMap<Agency, u64>,
    events: u64,
    declarations: u64,
}

/// The date someone born on `born` turns `years` (29 February falls on 28 February).
pub fn birthday(born: Date, years: i32) -> Date {
    let y = born.year() + years;
    Date::from_calendar_date(y, born.month(), born.day())
        .or_else(|_| Date::from_calendar_date(y, born.month(), born.day() - 1))
        .unwrap_or(born)
}

/// Whole years on `on`.
pub fn age(born: Date, on: Date) -> i32 {
    let mut a = on.year() - born.year();
    if on < birthday(born, a) {
        a -= 1;
    }
    a
}

/// Jeugdwet 7.3.5 per person: may a consent with these givers (`own`: the person is its subject
/// and gave it) cover someone of this age (unknown: the strictest rule)?
pub fn age_rule(age: Option<i32>, own: bool, parent: bool) -> bool {
    match age {
        Some(a) if a < 12 => parent,
        Some(a) if a < 16 => own && parent,
        Some(_) => own,
        None => own && parent,
    }
}

impl Model {
    pub fn new(start: OffsetDateTime) -> Model {
        Model {
            now: Some(start),
            ..Default::default()
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.now.unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    pub fn advance(&mut self, by: Duration) {
        self.now = Some(self.now() + by);
    }

    // ---- facts derived from the state ----

    /// The birth date from the newest live declaration that gives one.
    pub fn birth(&self, p: Person) -> Option<Date> {
        self.households
            .values()
            .filter_map(|h| {
                h.members
                    .iter()
                    .find(|m| m.person == p)
                    .and_then(|m| m.birth)
                    .map(|b| (h.declared, b))
            })
            .max_by_key(|(d, _)| *d)
            .map(|(_, b)| b)
    }

    pub fn age_of(&self, p: Person, on: Date) -> Option<i32> {
        self.birth(p).map(|b| age(b, on))
    }

    /// Unprotected members of live households in which `p` is an unprotected member, not `p`.
    pub fn housemates(&self, p: Person) -> BTreeSet<Person> {
        let mut out = BTreeSet::new();
        for h in self.households.values() {
            if h.members.iter().any(|m| m.person == p && !m.protected) {
                out.extend(
                    h.members
                        .iter()
                        .filter(|m| !m.protected && m.person != p)
                        .map(|m| m.person),
                );
            }
        }
        out
    }

    pub fn in_scope(&self, c: &Consent, p: Person) -> bool {
        c.subject == p || (c.include_household && self.housemates(c.subject).contains(&p))
    }

    /// The age rule for `p` under consent `c` on the date of `t`.
    pub fn age_ok(&self, c: &Consent, p: Person, t: OffsetDateTime) -> bool {
        let own = c.subject == p && c.givers.subject;
        age_rule(self.age_of(p, t.date()), own, c.givers.parent)
    }

    /// Does consent `c` cover person `p` for `purpose`, between viewer `v` and agency `a`, at `t`?
    pub fn covers(
        &self,
        c: &Consent,
        p: Person,
        purpose: Purpose,
        v: Agency,
        a: Agency,
        t: OffsetDateTime,
    ) -> bool {
        self.in_scope(c, p)
            && self.age_ok(c, p, t)
            && c.purposes.contains(&purpose)
            && c.active(t)
            && c.names(v)
            && c.names(a)
    }

    pub fn covering(&self, p: Person, purpose: Purpose, v: Agency, a: Agency) -> BTreeSet<usize> {
        let t = self.now();
        (0..self.consents.len())
            .filter(|&i| self.covers(&self.consents[i], p, purpose, v, a, t))
            .collect()
    }

    /// Pairs (s, o) of active signals of different agencies on the same person or on housemates,
    /// at `t`, with their level.
    fn pairs_at(&self, t: OffsetDateTime) -> BTreeMap<(SignalIx, SignalIx), Level> {
        let mut out = BTreeMap::new();
        for (i, s) in self.signals.iter().enumerate() {
            if !s.active(t) {
                continue;
            }
            let mates = self.housemates(s.person);
            for (j, o) in self.signals.iter().enumerate() {
                if i == j || o.agency == s.agency || !o.active(t) {
                    continue;
                }
                if o.person == s.person {
                    out.insert((i, j), Level::Subject);
                } else if mates.contains(&o.person) {
                    out.insert((i, j), Level::Household);
                }
            }
        }
        out
    }

    fn next_event(&mut self) -> u64 {
        self.events += 1;
        self.events
    }

    fn note(&mut self, event: u64, to: SignalIx, kind: Kind, other: SignalIx, level: Level) {
        self.notes.push(Note {
            event,
            recipient: self.signals[to].agency,
            recipient_signal: to,
            kind,
            other_signal: other,
            level,
            cursor: None,
            purged: false,
        });
    }

    /// Notifies the directed pairs that formed (MATCH) and ended (MATCH_ENDED) in one change.
    fn diff(
        &mut self,
        before: &BTreeMap<(SignalIx, SignalIx), Level>,
        after: &BTreeMap<(SignalIx, SignalIx), Level>,
    ) {
        let event = self.next_event();
        for (&(s, o), &l) in after {
            if !before.contains_key(&(s, o)) {
                self.note(event, s, Kind::Match, o, l);
            }
        }
        for (&(s, o), &l) in before {
            if !after.contains_key(&(s, o)) && self.signals[s].active(self.now()) {
                self.note(event, s, Kind::MatchEnded, o, l);
            }
        }
    }

    // ---- changes ----

    /// RegisterSignal: a new signal, or a refresh of the caller's active one of that category.
    pub fn register(
        &mut self,
        a: Agency,
        p: Person,
        category: Category,
        team: &str,
        requested: OffsetDateTime,
    ) -> Result<Registered, Failure> {
        let now = self.now();
        let mut expires = requested;
        // A young person's signal ends by their 23rd birthday (the end of youth care); an adult's
        // (a parent's) keeps the lifetime asked for.
        if let Some(born) = self.birth(p) {
            let end = birthday(born, 23).midnight().assume_utc();
            if end > now {
                expires = expires.min(end);
            }
        }
        let open = self.signals.iter().position(|s| {
            s.agency == a && s.person == p && s.category == category && s.ended.is_none()
        });
        if let Some(i) = open {
            if self.signals[i].active(now) {
                let s = &mut self.signals[i];
                s.team = team.to_owned();
                s.expires = expires;
                return Ok(Registered {
                    signal: i,
                    refreshed: true,
                    expires,
                });
            }
            // Expired, not yet purged: it ends at its expiry first.
            self.end_by_expiry(i);
        }
        let before = self.pairs_at(now);
        self.signals.push(Signal {
            agency: a,
            person: p,
            category,
            team: team.to_owned(),
            registered: now,
            expires,
            ended: None,
        });
        let after = self.pairs_at(now);
        self.diff(&before, &after);
        Ok(Registered {
            signal: self.signals.len() - 1,
            refreshed: false,
            expires,
        })
    }

    /// WithdrawSignal: only the caller's own active signal; anything else is the same NOT_FOUND.
    pub fn withdraw_signal(&mut self, a: Agency, s: SignalIx) -> Result<(), Failure> {
        let now = self.now();
        match self.signals.get(s) {
            Some(sig) if sig.agency == a && sig.active(now) => {}
            _ => return Err(Failure::not_found()),
        }
        let before = self.pairs_at(now);
        self.signals[s].ended = Some(now);
        let after = self.pairs_at(now);
        self.diff(&before, &after);
        Ok(())
    }

    /// Ends an expired signal at its expiry: MATCH_ENDED to the signals it matched just before.
    fn end_by_expiry(&mut self, i: SignalIx) {
        let just_before = self.signals[i].expires - Duration::microseconds(1);
        let pairs = self.pairs_at(just_before);
        let event = self.next_event();
        let ended: Vec<(SignalIx, Level)> = pairs
            .iter()
            .filter(|((s, _), _)| *s == i)
            .map(|((_, o), l)| (*o, *l))
            .collect();
        for (o, l) in ended {
            if self.signals[o].ended.is_none() {
                self.note(event, o, Kind::MatchEnded, i, l);
            }
        }
        self.signals[i].ended = Some(self.signals[i].expires);
    }

    /// The gateway's purge: expired signals end at their expiry; a week after a signal ended, its
    /// notifications are deleted.
    pub fn purge(&mut self) {
        let now = self.now();
        let mut expired: Vec<SignalIx> = (0..self.signals.len())
            .filter(|&i| self.signals[i].ended.is_none() && self.signals[i].expires <= now)
            .collect();
        expired.sort_by_key(|&i| self.signals[i].expires);
        for i in expired {
            self.end_by_expiry(i);
        }
        let cutoff = now - Duration::days(7);
        let gone = |s: &Signal| s.ended.is_some_and(|e| e <= cutoff);
        let signals = &self.signals;
        for note in self.notes.iter_mut() {
            if gone(&signals[note.recipient_signal]) || gone(&signals[note.other_signal]) {
                note.purged = true;
            }
        }
    }

    /// DeclareHousehold by the gemeente: replaces the members of `reference`. Returns `replaced`.
    pub fn declare(&mut self, reference: &str, members: Vec<Member>) -> bool {
        let now = self.now();
        let before = self.pairs_at(now);
        self.declarations += 1;
        let replaced = self
            .households
            .insert(
                reference.to_owned(),
                Household {
                    members,
                    declared: self.declarations,
                },
            )
            .is_some();
        let after = self.pairs_at(now);
        self.diff(&before, &after);
        replaced
    }

    pub fn dissolve(&mut self, reference: &str) -> Result<(), Failure> {
        let now = self.now();
        if !self.households.contains_key(reference) {
            return Err(Failure::not_found());
        }
        let before = self.pairs_at(now);
        self.households.remove(reference);
        let after = self.pairs_at(now);
        self.diff(&before, &after);
        Ok(())
    }

    /// RecordConsent: the caller needs an active signal on the subject; the consent must cover its
    /// own subject under the age rule today.
    #[allow(clippy::too_many_arguments)]
    pub fn record_consent(
        &mut self,
        a: Agency,
        subject: Person,
        include_household: bool,
        givers: Givers,
        purposes: BTreeSet<Purpose>,
        roles: BTreeSet<Agency>,
        oins: BTreeSet<Agency>,
        valid_until: OffsetDateTime,
    ) -> Result<Recorded, Failure> {
        let now = self.now();
        if !self
            .signals
            .iter()
            .any(|s| s.agency == a && s.person == subject && s.active(now))
        {
            return Err(Failure::denied("NOT_INVOLVED"));
        }
        if !age_rule(
            self.age_of(subject, now.date()),
            givers.subject,
            givers.parent,
        ) {
            return Err(Failure::denied("AGE_RULE_NOT_MET"));
        }
        let renew_by = self.birth(subject).and_then(|b| {
            [birthday(b, 12), birthday(b, 16)]
                .into_iter()
                .find(|d| *d > now.date() && *d < valid_until.date())
        });
        self.consents.push(Consent {
            recorder: a,
            subject,
            include_household,
            givers,
            purposes,
            roles,
            oins,
            recorded: now,
            valid_until,
            withdrawn: None,
        });
        Ok(Recorded {
            consent: self.consents.len() - 1,
            renew_by,
        })
    }

    /// May `a` withdraw consent `c`? The recorder, or an agency with an active signal on a person
    /// the consent is in scope for and that the consent names.
    fn may_withdraw(&self, a: Agency, c: &Consent) -> bool {
        let now = self.now();
        c.recorder == a
            || (c.names(a)
                && self
                    .signals
                    .iter()
                    .any(|s| s.agency == a && s.active(now) && self.in_scope(c, s.person)))
    }

    /// WithdrawConsent. `Ok(false)`: the consent had already ended (the answer is not specified).
    pub fn withdraw_consent(&mut self, a: Agency, c: ConsentIx) -> Result<bool, Failure> {
        let now = self.now();
        let Some(consent) = self.consents.get(c) else {
            return Err(Failure::not_found());
        };
        if !self.may_withdraw(a, consent) {
            return Err(Failure::not_found());
        }
        if !consent.active(now) {
            return Ok(false);
        }
        self.consents[c].withdrawn = Some(now);
        Ok(true)
    }

    // ---- what an agency may learn ----

    /// The call-level basis on the caller's own person `q` (QueryInvolvement step 2).
    pub fn call_basis(&self, v: Agency, q: Person, ask: Ask) -> Result<CallBasis, Failure> {
        if ask.purpose == Purpose::ChildSafety && !v.may_invoke_safety() {
            return Err(Failure::denied("PURPOSE_NOT_ALLOWED"));
        }
        let consents = self.covering(q, ask.purpose, v, v);
        if !consents.is_empty() {
            return Ok(CallBasis {
                basis: Basis::Consent,
                consents,
            });
        }
        if ask.purpose == Purpose::ChildSafety {
            return if ask.justified {
                Ok(CallBasis {
                    basis: Basis::Safety,
                    consents: BTreeSet::new(),
                })
            } else {
                Err(Failure::denied("JUSTIFICATION_REQUIRED"))
            };
        }
        let now = self.now();
        let mut reasons = BTreeSet::new();
        for c in &self.consents {
            if !c.names(v) || !self.in_scope(c, q) {
                continue;
            }
            let right = c.purposes.contains(&ask.purpose);
            let withdrawn = c.withdrawn.is_some_and(|w| w <= now);
            let expired = c.valid_until <= now;
            match (right, withdrawn, expired) {
                (false, false, false) => {
                    reasons.insert("CONSENT_WRONG_PURPOSE");
                }
                (true, true, _) => {
                    reasons.insert("CONSENT_WITHDRAWN");
                }
                (true, false, true) => {
                    reasons.insert("CONSENT_EXPIRED");
                }
                (true, false, false) => {
                    reasons.insert("AGE_RULE_NOT_MET");
                }
                _ => {}
            }
        }
        if reasons.is_empty() {
            reasons.insert("CONSENT_MISSING");
        }
        Err(Failure {
            code: Code::PermissionDenied,
            reasons,
            field: None,
        })
    }

    /// The one disclosure rule: what viewer `v` may see of signal `o`, matched at `level`.
    pub fn disclose(&self, v: Agency, o: SignalIx, level: Level, ask: Ask) -> Option<Seen> {
        let sig = &self.signals[o];
        let consents = self.covering(sig.person, ask.purpose, v, sig.agency);
        let safety = ask.purpose == Purpose::ChildSafety && v.may_invoke_safety() && ask.justified;
        let basis = if !consents.is_empty() {
            Basis::Consent
        } else if safety {
            Basis::Safety
        } else {
            return None;
        };
        let sensitive = sig.agency == Agency::VeiligThuis || sig.category == Category::Safety;
        let full = !sensitive || v == Agency::VeiligThuis || ask.purpose == Purpose::ChildSafety;
        Some(Seen {
            signal: o,
            agency: full.then_some(sig.agency),
            category: full.then_some(sig.category),
            team: sig.team.clone(),
            level,
            basis,
            consents,
            safety_too: safety,
        })
    }

    /// QueryInvolvement on signal `s` of `v`.
    pub fn query(&self, v: Agency, s: SignalIx, ask: Ask) -> Result<Answer, Failure> {
        let now = self.now();
        if ask.purpose == Purpose::ChildSafety && !v.may_invoke_safety() {
            return Err(Failure::denied("PURPOSE_NOT_ALLOWED"));
        }
        let own = match self.signals.get(s) {
            Some(sig) if sig.agency == v && sig.active(now) => sig,
            _ => return Err(Failure::denied("NOT_INVOLVED")),
        };
        let q = own.person;
        let basis = self.call_basis(v, q, ask)?;
        let mates = self.housemates(q);
        let mut involvements = Vec::new();
        for (o, sig) in self.signals.iter().enumerate() {
            if sig.agency == v || !sig.active(now) {
                continue;
            }
            let level = if sig.person == q {
                Level::Subject
            } else if mates.contains(&sig.person) {
                Level::Household
            } else {
                continue;
            };
            if let Some(seen) = self.disclose(v, o, level, ask) {
                involvements.push(seen);
            }
        }
        Ok(Answer {
            basis,
            involvements,
        })
    }

    /// Is note `n` deliverable to its recipient now, for `ask`? What it shows when it is.
    fn deliverable(&self, n: usize, ask: Ask) -> Option<(Seen, CallBasis)> {
        let now = self.now();
        let note = &self.notes[n];
        let mine = &self.signals[note.recipient_signal];
        if !mine.active(now) {
            return None;
        }
        let basis = self.call_basis(note.recipient, mine.person, ask).ok()?;
        match note.kind {
            Kind::Match => {
                if !self.signals[note.other_signal].active(now) {
                    return None;
                }
            }
            Kind::MatchEnded => {
                let seen_match = self.notes[..n].iter().any(|m| {
                    m.kind == Kind::Match
                        && m.recipient_signal == note.recipient_signal
                        && m.other_signal == note.other_signal
                        && m.cursor.is_some()
                });
                if !seen_match {
                    return None;
                }
            }
        }
        let seen = self.disclose(note.recipient, note.other_signal, note.level, ask)?;
        Some((seen, basis))
    }

    /// A read (ListNotifications, or a stream's catch-up) by `v` after `after`: the notifications
    /// due, numbering those delivered for the first time.
    pub fn read(&mut self, v: Agency, after: u64, ask: Ask) -> Read {
        let mut due = Vec::new();
        let mut cursor = after;
        // Already numbered, still deliverable: again, in cursor order; the others are skipped.
        let mut numbered: Vec<usize> = (0..self.notes.len())
            .filter(|&n| {
                let note = &self.notes[n];
                note.recipient == v && !note.purged && note.cursor.is_some_and(|c| c > after)
            })
            .collect();
        numbered.sort_by_key(|&n| self.notes[n].cursor);
        for n in numbered {
            let c = self.notes[n].cursor.unwrap_or_default();
            cursor = cursor.max(c);
            if let Some((other, basis)) = self.deliverable(n, ask) {
                due.push(self.due(n, c, None, other, basis));
            }
        }
        // Pending ones that are deliverable now get the next cursor values, in creation order.
        for n in 0..self.notes.len() {
            let note = &self.notes[n];
            if note.recipient != v || note.cursor.is_some() || note.purged {
                continue;
            }
            if let Some((other, basis)) = self.deliverable(n, ask) {
                let next = self.next_cursor.entry(v).or_insert(0);
                *next += 1;
                let c = *next;
                self.notes[n].cursor = Some(c);
                cursor = cursor.max(c);
                let group = Some(self.notes[n].event);
                due.push(self.due(n, c, group, other, basis));
            }
        }
        Read { due, cursor }
    }

    fn due(&self, n: usize, cursor: u64, group: Option<u64>, other: Seen, basis: CallBasis) -> Due {
        let note = &self.notes[n];
        Due {
            note: n,
            cursor,
            group,
            kind: note.kind,
            your_signal: note.recipient_signal,
            other,
            basis,
        }
    }

    /// The gateway numbered notes of one group in another (free) order: adopt its numbering.
    pub fn renumber(&mut self, note: usize, cursor: u64) {
        self.notes[note].cursor = Some(cursor);
    }

    /// The highest cursor value handed to `v` so far.
    pub fn cursor_of(&self, v: Agency) -> u64 {
        self.next_cursor.get(&v).copied().unwrap_or(0)
    }

    /// ListConsents by `v`: consents in scope for the person of one of its active signals that
    /// name it; `recorded_by` shown only where active, covering that person under the age rule and
    /// naming the recorder.
    pub fn list_consents(&self, v: Agency, include_inactive: bool) -> Vec<Listed> {
        let now = self.now();
        let persons: BTreeSet<Person> = self
            .signals
            .iter()
            .filter(|s| s.agency == v && s.active(now))
            .map(|s| s.person)
            .collect();
        let mut out = Vec::new();
        for (i, c) in self.consents.iter().enumerate() {
            if !c.names(v) || !(include_inactive || c.active(now)) {
                continue;
            }
            let mine: Vec<Person> = persons
                .iter()
                .copied()
                .filter(|&p| self.in_scope(c, p))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let shown = c.active(now)
                && c.names(c.recorder)
                && mine.iter().any(|&p| self.age_ok(c, p, now));
            out.push(Listed {
                consent: i,
                recorded_by: shown.then_some(c.recorder),
            });
        }
        out
    }

    /// The signal whose current contact team is `team`.
    pub fn signal_by_team(&self, team: &str) -> Option<SignalIx> {
        self.signals.iter().position(|s| s.team == team)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    const T0: OffsetDateTime = datetime!(2026-06-01 10:00 UTC);

    fn member(person: Person, birth: Option<Date>) -> Member {
        Member {
            person,
            protected: false,
            birth,
        }
    }

    fn everyone() -> BTreeSet<Agency> {
        [Agency::Wij, Agency::Ggd, Agency::Jeugdhulp].into()
    }

    // The family of four: mother 0 (1985), child 1 (9), child 2 (14), child 3 (17).
    fn family() -> Model {
        let mut m = Model::new(T0);
        m.declare(
            "hh",
            vec![
                member(0, Some(date!(1985 - 03 - 01))),
                member(1, Some(date!(2017 - 01 - 01))),
                member(2, Some(date!(2012 - 01 - 01))),
                member(3, Some(date!(2009 - 01 - 01))),
            ],
        );
        m
    }

    const CARE: Ask = Ask {
        purpose: Purpose::CareCoordination,
        justified: false,
    };

    #[test]
    fn mothers_own_consent_covers_only_her() {
        let mut m = family();
        let far = T0 + Duration::days(300);
        // Registered on the mother (41): an adult's signal keeps the lifetime asked for.
        assert_eq!(
            m.register(Agency::Ggd, 0, Category::Health, "g", far)
                .map(|r| r.expires),
            Ok(far)
        );
        let mut m = Model::new(T0);
        let ggd = m
            .register(Agency::Ggd, 0, Category::Health, "g", far)
            .unwrap();
        let jh = m
            .register(Agency::Jeugdhulp, 1, Category::YouthCare, "j", far)
            .unwrap();
        let jh_mother = m
            .register(Agency::Jeugdhulp, 0, Category::Parenting, "jm", far)
            .unwrap();
        m.declare(
            "hh",
            vec![
                member(0, Some(date!(1985 - 03 - 01))),
                member(1, Some(date!(2016 - 01 - 01))),
            ],
        );
        m.record_consent(
            Agency::Ggd,
            0,
            false,
            Givers {
                subject: true,
                parent: false,
            },
            [Purpose::CareCoordination].into(),
            everyone(),
            BTreeSet::new(),
            far,
        )
        .unwrap();
        let a = m.query(Agency::Ggd, ggd.signal, CARE).unwrap();
        let seen: Vec<SignalIx> = a.involvements.iter().map(|s| s.signal).collect();
        assert_eq!(
            seen,
            vec![jh_mother.signal],
            "the 10-year-old is not covered"
        );
        let _ = jh;
    }

    #[test]
    fn age_rules_per_member() {
        let mut m = Model::new(T0);
        let far = T0 + Duration::days(300);
        let wij = m
            .register(Agency::Wij, 1, Category::Parenting, "w", far)
            .unwrap();
        let jh17 = m
            .register(Agency::Jeugdhulp, 3, Category::MentalHealth, "j", far)
            .unwrap();
        let ggd9 = m
            .register(Agency::Ggd, 1, Category::Health, "g", far)
            .unwrap();
        let _ = family_into(&mut m);
        m.record_consent(
            Agency::Wij,
            1,
            true,
            Givers {
                subject: false,
                parent: true,
            },
            [Purpose::CareCoordination].into(),
            everyone(),
            BTreeSet::new(),
            far,
        )
        .unwrap();
        let a = m.query(Agency::Wij, wij.signal, CARE).unwrap();
        let seen: Vec<SignalIx> = a.involvements.iter().map(|s| s.signal).collect();
        assert_eq!(seen, vec![ggd9.signal], "the 17-year-old is not covered");
        assert!(!seen.contains(&jh17.signal));
    }

    fn family_into(m: &mut Model) -> bool {
        m.declare(
            "hh",
            vec![
                member(0, Some(date!(1985 - 03 - 01))),
                member(1, Some(date!(2017 - 01 - 01))),
                member(2, Some(date!(2012 - 01 - 01))),
                member(3, Some(date!(2009 - 01 - 01))),
            ],
        )
    }

    #[test]
    fn notifications_wait_for_a_basis_and_come_once() {
        let mut m = Model::new(T0);
        let far = T0 + Duration::days(300);
        let w = m
            .register(Agency::Wij, 3, Category::Parenting, "w", far)
            .unwrap();
        m.register(Agency::Ggd, 3, Category::Health, "g", far)
            .unwrap();
        family_into(&mut m);
        assert!(m.read(Agency::Wij, 0, CARE).due.is_empty());
        assert_eq!(m.read(Agency::Wij, 0, CARE).cursor, 0);
        m.advance(Duration::seconds(1));
        m.record_consent(
            Agency::Wij,
            3,
            false,
            Givers {
                subject: true,
                parent: false,
            },
            [Purpose::CareCoordination].into(),
            everyone(),
            BTreeSet::new(),
            far,
        )
        .unwrap();
        let r = m.read(Agency::Wij, 0, CARE);
        assert_eq!((r.due.len(), r.cursor), (1, 1));
        assert_eq!(r.due[0].your_signal, w.signal);
        let again = m.read(Agency::Wij, 1, CARE);
        assert!(again.due.is_empty() && again.cursor == 1);
        assert_eq!(m.read(Agency::Ggd, 0, CARE).cursor, 1);
    }

    #[test]
    fn age_rule_table() {
        assert!(age_rule(Some(9), false, true));
        assert!(!age_rule(Some(9), true, false));
        assert!(!age_rule(Some(14), false, true));
        assert!(age_rule(Some(14), true, true));
        assert!(!age_rule(Some(17), false, true));
        assert!(age_rule(Some(17), true, true));
        assert!(!age_rule(None, true, false));
        assert!(age_rule(None, true, true));
        assert_eq!(age(date!(2014 - 06 - 02), date!(2026 - 06 - 01)), 11);
        assert_eq!(age(date!(2014 - 06 - 01), date!(2026 - 06 - 01)), 12);
    }
}
