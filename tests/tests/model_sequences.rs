//! Generated sequences of events run against the real gateway (mutual TLS on loopback, SQLite and
//! PostgreSQL) and held, after every step, to the reference model in `signaalpoort_tests::model`:
//! every answer, denial (code and ErrorInfo reason), notification, cursor and consent listing each
//! agency receives must be exactly what the model says it may learn — nothing beyond, and every due
//! notification exactly once, in order.
//!
//! `SIGNAALPOORT_MODEL_CASES` sets the number of sequences per backend (default 24) for long local
//! runs. A failure prints the minimal sequence as Rust: paste it into a named `regression_` test.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestCaseError, TestRunner};
use signaalpoort_api::v1 as pb;
use signaalpoort_cli::client::AgencyClient;
use signaalpoort_server::ManualClock;
use signaalpoort_tests::model::{
    self, Agency, Ask, Category, Givers, Level, Member, Model, Purpose,
};
use signaalpoort_tests::*;
use time::{Date, Duration, OffsetDateTime};
use tonic::Code;
use tonic_types::StatusExt;

use Agency::*;
use Category::*;
use Purpose::*;

// ---------------------------------------------------------------- the population

/// Mother (adult), a 9-year-old, a child about to turn 12, one about to turn 16, a protected
/// 7-year-old (shelter address) and an unrelated adult.
const PEOPLE: usize = 6;
const PROTECTED: usize = 4;

fn birth_dates(start: Date) -> [Date; PEOPLE] {
    let years_before = |d: Date, y: i32| model::birthday(d, -y);
    [
        years_before(start, 40),
        years_before(start - Duration::days(60), 9),
        years_before(start + Duration::days(4), 12),
        years_before(start + Duration::days(9), 16),
        years_before(start - Duration::days(30), 7),
        years_before(start - Duration::days(100), 30),
    ]
}

const HOUSEHOLDS: [&str; 2] = ["hh-a", "hh-b"];
const CARE: [Agency; 4] = [Wij, Ggd, VeiligThuis, Jeugdhulp];

// ---------------------------------------------------------------- steps

/// One event. Indices into signals and consents are taken modulo how many exist, so every shrunk
/// sequence stays meaningful.
#[derive(Debug, Clone)]
pub enum Step {
    Register {
        agency: Agency,
        person: usize,
        category: Category,
        short: bool,
    },
    /// `own`: the agency withdraws its own signal (else: tries another agency's).
    WithdrawSignal {
        agency: Agency,
        signal: usize,
        own: bool,
    },
    Declare {
        household: usize,
        /// (person, with birth date)
        members: Vec<(usize, bool)>,
    },
    Dissolve {
        household: usize,
    },
    RecordConsent {
        agency: Agency,
        subject: usize,
        household: bool,
        /// 1: subject, 2: parent, 3: both.
        givers: u8,
        /// Bits: care coordination, child safety, case coordination.
        purposes: u8,
        /// Bits over CARE.
        named: u8,
        by_oin: bool,
        short: bool,
    },
    WithdrawConsent {
        agency: Agency,
        consent: usize,
    },
    Query {
        agency: Agency,
        signal: usize,
        own: bool,
        purpose: Purpose,
        justified: bool,
    },
    Poll {
        agency: Agency,
        purpose: Purpose,
        justified: bool,
        from_zero: bool,
    },
    ListConsents {
        agency: Agency,
        include_inactive: bool,
    },
    Purge,
    Advance {
        hours: u32,
    },
}

fn agency() -> impl Strategy<Value = Agency> {
    prop::sample::select(CARE.to_vec())
}

fn purpose() -> impl Strategy<Value = Purpose> {
    prop::sample::select(vec![CareCoordination, ChildSafety, CaseCoordination])
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (agency(), 0..PEOPLE, prop::sample::select(vec![Parenting, Health, MentalHealth, YouthCare, Safety]), prop::bool::weighted(0.2))
            .prop_map(|(agency, person, category, short)| Step::Register { agency, person, category, short }),
        1 => (agency(), any::<usize>(), prop::bool::weighted(0.8))
            .prop_map(|(agency, signal, own)| Step::WithdrawSignal { agency, signal, own }),
        3 => (0..2usize, prop::collection::btree_map(0..PEOPLE, prop::bool::weighted(0.7), 2..=PEOPLE))
            .prop_map(|(household, m)| Step::Declare { household, members: m.into_iter().collect() }),
        1 => (0..2usize).prop_map(|household| Step::Dissolve { household }),
        4 => (agency(), 0..PEOPLE, any::<bool>(), 1..=3u8, 1..8u8, 1..16u8, prop::bool::weighted(0.3), prop::bool::weighted(0.2))
            .prop_map(|(agency, subject, household, givers, purposes, named, by_oin, short)| Step::RecordConsent {
                agency, subject, household, givers, purposes, named, by_oin, short,
            }),
        1 => (agency(), any::<usize>()).prop_map(|(agency, consent)| Step::WithdrawConsent { agency, consent }),
        4 => (agency(), any::<usize>(), prop::bool::weighted(0.85), purpose(), any::<bool>())
            .prop_map(|(agency, signal, own, purpose, justified)| Step::Query { agency, signal, own, purpose, justified }),
        2 => (agency(), purpose(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(agency, purpose, justified, from_zero)| Step::Poll { agency, purpose, justified, from_zero }),
        1 => (agency(), any::<bool>()).prop_map(|(agency, include_inactive)| Step::ListConsents { agency, include_inactive }),
        1 => Just(Step::Purge),
        2 => prop::sample::select(vec![1u32, 24, 72, 150]).prop_map(|hours| Step::Advance { hours }),
    ]
}

fn sequence() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 10..=30)
}

// ---------------------------------------------------------------- the world: gateway + model

struct World {
    gw: Gateway,
    clock: ManualClock,
    clients: BTreeMap<Agency, AgencyClient>,
    model: Model,
    bsns: Vec<String>,
    births: [Date; PEOPLE],
    /// Model signal index → gateway signal id.
    signal_ids: Vec<String>,
    consent_ids: Vec<String>,
    /// The cursor each agency resumes from.
    cursors: BTreeMap<Agency, u64>,
    oins: BTreeMap<Agency, String>,
    step: usize,
}

const JUSTIFICATION: &str = "Acute zorg om de veiligheid van het kind, meldcode stap 5";
const WITHHELD_NAME: &str = "een betrokken professional";

fn slug(a: Agency) -> &'static str {
    match a {
        Gemeente => GEMEENTE,
        Wij => WIJ,
        Ggd => GGD,
        VeiligThuis => VEILIG_THUIS,
        Jeugdhulp => JEUGDHULP,
    }
}

fn category_pb(c: Category) -> pb::Category {
    match c {
        Parenting => pb::Category::Parenting,
        Health => pb::Category::Health,
        MentalHealth => pb::Category::MentalHealth,
        Finances => pb::Category::Finances,
        YouthCare => pb::Category::YouthCare,
        Safety => pb::Category::Safety,
    }
}

fn category_from(c: i32) -> Option<Category> {
    [Parenting, Health, MentalHealth, Finances, YouthCare, Safety]
        .into_iter()
        .find(|m| category_pb(*m) as i32 == c)
}

fn purpose_pb(p: Purpose) -> pb::Purpose {
    match p {
        CareCoordination => pb::Purpose::CareCoordination,
        ChildSafety => pb::Purpose::ChildSafety,
        CaseCoordination => pb::Purpose::CaseCoordination,
    }
}

fn role_pb(a: Agency) -> pb::Role {
    match a {
        Gemeente => pb::Role::Gemeente,
        Wij => pb::Role::Wij,
        Ggd => pb::Role::Ggd,
        VeiligThuis => pb::Role::VeiligThuis,
        Jeugdhulp => pb::Role::Jeugdhulp,
    }
}

fn basis_pb(b: model::Basis) -> pb::Basis {
    match b {
        model::Basis::Consent => pb::Basis::Consent,
        model::Basis::Safety => pb::Basis::Safety,
    }
}

fn ts(t: OffsetDateTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: 0,
    })
}

type Check = Result<(), String>;

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Check {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// Compares a gateway error with the model's expected failure.
fn same_failure(status: &tonic::Status, want: &model::Failure) -> Check {
    let code = match want.code {
        model::Code::InvalidArgument => Code::InvalidArgument,
        model::Code::PermissionDenied => Code::PermissionDenied,
        model::Code::NotFound => Code::NotFound,
    };
    ensure(status.code() == code, || {
        format!(
            "expected {want:?}, got {:?}: {}",
            status.code(),
            status.message()
        )
    })?;
    if !want.reasons.is_empty() {
        let reason = status
            .get_details_error_info()
            .map(|i| i.reason)
            .unwrap_or_default();
        ensure(want.reasons.contains(reason.as_str()), || {
            format!(
                "expected reason in {:?}, got {reason:?} ({})",
                want.reasons,
                status.message()
            )
        })?;
    }
    if let Some(field) = want.field {
        let fields = status
            .get_details_bad_request()
            .map(|b| {
                b.field_violations
                    .into_iter()
                    .map(|v| v.field)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        ensure(fields.iter().any(|f| f == field), || {
            format!(
                "expected a violation on {field}, got {fields:?} ({})",
                status.message()
            )
        })?;
    }
    Ok(())
}

impl World {
    async fn new(env: &Env) -> World {
        let start = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("whole second");
        let clock = ManualClock::new(start);
        let gw = env
            .start_with(
                &clock,
                "[signals]\npurge_interval_secs = 86400\n[limits]\nwatch_heartbeat_secs = 1\n",
            )
            .await;
        let mut clients = BTreeMap::new();
        for a in Agency::ALL {
            clients.insert(a, gw.client(slug(a)).await);
        }
        let oins = signaalpoort_tls::devpki::default_dev_agencies()
            .into_iter()
            .filter_map(|d| {
                Agency::ALL
                    .into_iter()
                    .find(|a| slug(*a) == d.slug)
                    .map(|a| (a, d.oin))
            })
            .collect();
        World {
            gw,
            model: Model::new(start),
            clock,
            clients,
            bsns: (0..PEOPLE as u32).map(|n| bsn(9_000 + n)).collect(),
            births: birth_dates(start.date()),
            signal_ids: Vec::new(),
            consent_ids: Vec::new(),
            cursors: BTreeMap::new(),
            oins,
            step: 0,
        }
    }

    fn client(&mut self, a: Agency) -> &mut AgencyClient {
        self.clients.get_mut(&a).expect("client per agency")
    }

    fn agency_of_oin(&self, oin: &str) -> Option<Agency> {
        self.oins.iter().find(|(_, o)| *o == oin).map(|(a, _)| *a)
    }

    fn consent_ix(&self, id: &str) -> Option<usize> {
        self.consent_ids.iter().position(|c| c == id)
    }

    fn signal_ix(&self, id: &str) -> Option<usize> {
        self.signal_ids.iter().position(|c| c == id)
    }

    /// Runs one step on both sides and compares, then lets every care agency poll.
    async fn run(&mut self, step: &Step) -> Check {
        self.step += 1;
        self.apply(step).await?;
        for a in CARE {
            let ask = Ask {
                purpose: CareCoordination,
                justified: false,
            };
            let after = self.cursors.get(&a).copied().unwrap_or(0);
            self.poll(a, after, ask)
                .await
                .map_err(|e| format!("after-step poll by {a:?}: {e}"))?;
        }
        self.clock.advance(Duration::seconds(1));
        self.model.advance(Duration::seconds(1));
        Ok(())
    }

    async fn apply(&mut self, step: &Step) -> Check {
        let now = self.model.now();
        match step.clone() {
            Step::Register {
                agency,
                person,
                category,
                short,
            } => {
                let team = format!("Team {}", self.step);
                let requested = now + Duration::days(if short { 2 } else { 400 });
                let bsn = self.bsns[person].clone();
                let got = self
                    .client(agency)
                    .signals
                    .register_signal(pb::RegisterSignalRequest {
                        bsn,
                        category: category_pb(category) as i32,
                        contact: contact(&team),
                        expires_at: ts(requested),
                        ..Default::default()
                    })
                    .await;
                let want = self
                    .model
                    .register(agency, person, category, &team, requested);
                match (got, want) {
                    (Ok(r), Ok(w)) => {
                        let r = r.into_inner();
                        let s = r.signal.unwrap_or_default();
                        ensure(r.refreshed == w.refreshed, || {
                            format!("refreshed: gateway {}, model {}", r.refreshed, w.refreshed)
                        })?;
                        if w.refreshed {
                            ensure(self.signal_ids.get(w.signal) == Some(&s.signal_id), || {
                                "a refresh returned another signal id".to_owned()
                            })?;
                        } else {
                            ensure(!self.signal_ids.contains(&s.signal_id), || {
                                "a new signal reused an id".to_owned()
                            })?;
                            self.signal_ids.push(s.signal_id.clone());
                        }
                        let exp = s.expires_at.map(|t| t.seconds).unwrap_or_default();
                        ensure(exp == w.expires.unix_timestamp(), || {
                            format!("expires_at {exp}, model {}", w.expires)
                        })
                    }
                    (Err(e), Err(w)) => same_failure(&e, &w),
                    (got, want) => Err(format!("gateway {got:?}, model {want:?}")),
                }
            }
            Step::WithdrawSignal {
                agency,
                signal,
                own,
            } => {
                if self.signal_ids.is_empty() {
                    return Ok(());
                }
                let ix = signal % self.signal_ids.len();
                let agency = if own {
                    self.model.signals[ix].agency
                } else {
                    agency
                };
                let signal_id = self.signal_ids[ix].clone();
                let got = self
                    .client(agency)
                    .signals
                    .withdraw_signal(pb::WithdrawSignalRequest {
                        signal_id,
                        ..Default::default()
                    })
                    .await;
                let want = self.model.withdraw_signal(agency, ix);
                match (got, want) {
                    (Ok(_), Ok(())) => Ok(()),
                    (Err(e), Err(w)) => same_failure(&e, &w),
                    (got, want) => Err(format!("gateway {got:?}, model {want:?}")),
                }
            }
            Step::Declare { household, members } => {
                let births = self.births;
                let pb_members = members
                    .iter()
                    .map(|&(p, dated)| pb::HouseholdMember {
                        bsn: self.bsns[p].clone(),
                        protected: p == PROTECTED,
                        birth_date: if dated {
                            births[p].to_string()
                        } else {
                            String::new()
                        },
                    })
                    .collect();
                let got = self
                    .client(Gemeente)
                    .households
                    .declare_household(pb::DeclareHouseholdRequest {
                        household_ref: HOUSEHOLDS[household].to_owned(),
                        members: pb_members,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("declare: {e:?}"))?
                    .into_inner();
                let replaced = self.model.declare(
                    HOUSEHOLDS[household],
                    members
                        .iter()
                        .map(|&(p, dated)| Member {
                            person: p,
                            protected: p == PROTECTED,
                            birth: dated.then_some(births[p]),
                        })
                        .collect(),
                );
                ensure(got.replaced == replaced, || {
                    format!("replaced: gateway {}, model {replaced}", got.replaced)
                })
            }
            Step::Dissolve { household } => {
                let got = self
                    .client(Gemeente)
                    .households
                    .dissolve_household(pb::DissolveHouseholdRequest {
                        household_ref: HOUSEHOLDS[household].to_owned(),
                        ..Default::default()
                    })
                    .await;
                match (got, self.model.dissolve(HOUSEHOLDS[household])) {
                    (Ok(_), Ok(())) => Ok(()),
                    (Err(e), Err(w)) => same_failure(&e, &w),
                    (got, want) => Err(format!("gateway {got:?}, model {want:?}")),
                }
            }
            Step::RecordConsent {
                agency,
                subject,
                household,
                givers,
                purposes,
                named,
                by_oin,
                short,
            } => {
                let givers = Givers {
                    subject: givers & 1 != 0,
                    parent: givers & 2 != 0,
                };
                let purposes: BTreeSet<Purpose> = [CareCoordination, ChildSafety, CaseCoordination]
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| purposes & (1 << i) != 0)
                    .map(|(_, p)| p)
                    .collect();
                let named: BTreeSet<Agency> = CARE
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| named & (1 << i) != 0)
                    .map(|(_, a)| a)
                    .collect();
                let (roles, oins) = if by_oin {
                    (BTreeSet::new(), named)
                } else {
                    (named, BTreeSet::new())
                };
                let valid_until = now + Duration::days(if short { 3 } else { 300 });
                let mut pb_givers = Vec::new();
                if givers.subject {
                    pb_givers.push(pb::ConsentGiver::Subject as i32);
                }
                if givers.parent {
                    pb_givers.push(pb::ConsentGiver::ParentOrGuardian as i32);
                }
                let request = pb::RecordConsentRequest {
                    bsn: self.bsns[subject].clone(),
                    include_household: household,
                    givers: pb_givers,
                    purposes: purposes.iter().map(|p| purpose_pb(*p) as i32).collect(),
                    roles: roles.iter().map(|a| role_pb(*a) as i32).collect(),
                    agency_oins: oins.iter().map(|a| self.oins[a].clone()).collect(),
                    valid_until: ts(valid_until),
                    evidence_ref: "dossier/toestemming-1".into(),
                    ..Default::default()
                };
                let got = self.client(agency).consents.record_consent(request).await;
                let want = self.model.record_consent(
                    agency,
                    subject,
                    household,
                    givers,
                    purposes,
                    roles,
                    oins,
                    valid_until,
                );
                match (got, want) {
                    (Ok(r), Ok(w)) => {
                        let c = r.into_inner().consent.unwrap_or_default();
                        self.consent_ids.push(c.consent_id.clone());
                        let renew = c
                            .renew_by
                            .and_then(|t| OffsetDateTime::from_unix_timestamp(t.seconds).ok())
                            .map(|t| t.date());
                        ensure(renew == w.renew_by, || {
                            format!("renew_by: gateway {renew:?}, model {:?}", w.renew_by)
                        })
                    }
                    (Err(e), Err(w)) => same_failure(&e, &w),
                    (got, want) => Err(format!("gateway {got:?}, model {want:?}")),
                }
            }
            Step::WithdrawConsent { agency, consent } => {
                if self.consent_ids.is_empty() {
                    return Ok(());
                }
                let ix = consent % self.consent_ids.len();
                let consent_id = self.consent_ids[ix].clone();
                let got = self
                    .client(agency)
                    .consents
                    .withdraw_consent(pb::WithdrawConsentRequest {
                        consent_id,
                        ..Default::default()
                    })
                    .await;
                match (got, self.model.withdraw_consent(agency, ix)) {
                    (Ok(_), Ok(_)) | (_, Ok(false)) => Ok(()),
                    (Err(e), Err(w)) => same_failure(&e, &w),
                    (got, want) => Err(format!("gateway {got:?}, model {want:?}")),
                }
            }
            Step::Query {
                agency,
                signal,
                own,
                purpose,
                justified,
            } => {
                if self.signal_ids.is_empty() {
                    return Ok(());
                }
                let ix = signal % self.signal_ids.len();
                let agency = if own {
                    self.model.signals[ix].agency
                } else {
                    agency
                };
                let signal_id = self.signal_ids[ix].clone();
                let got = self
                    .client(agency)
                    .signals
                    .query_involvement(pb::QueryInvolvementRequest {
                        signal_id,
                        purpose: purpose_pb(purpose) as i32,
                        safety_justification: if justified {
                            JUSTIFICATION.into()
                        } else {
                            String::new()
                        },
                    })
                    .await;
                let want = self.model.query(agency, ix, Ask { purpose, justified });
                match (got, want) {
                    (Ok(r), Ok(w)) => {
                        let r = r.into_inner();
                        self.same_call_basis(r.basis, &r.consent_id, &w.basis)?;
                        let mut got = Vec::new();
                        for i in &r.involvements {
                            got.push(self.seen(i)?);
                        }
                        self.same_seen_list(got, w.involvements)
                    }
                    (Err(e), Err(w)) => same_failure(&e, &w),
                    (got, want) => Err(format!("gateway {got:?}, model {want:?}")),
                }
            }
            Step::Poll {
                agency,
                purpose,
                justified,
                from_zero,
            } => {
                let after = if from_zero {
                    0
                } else {
                    self.cursors.get(&agency).copied().unwrap_or(0)
                };
                self.poll(agency, after, Ask { purpose, justified }).await
            }
            Step::ListConsents {
                agency,
                include_inactive,
            } => {
                let got = self
                    .client(agency)
                    .consents
                    .list_consents(pb::ListConsentsRequest { include_inactive })
                    .await
                    .map_err(|e| format!("list consents: {e:?}"))?
                    .into_inner();
                let mut seen = BTreeMap::new();
                for c in got.consents {
                    let ix = self
                        .consent_ix(&c.consent_id)
                        .ok_or_else(|| format!("unknown consent {}", c.consent_id))?;
                    let by = c.recorded_by.unwrap_or_default();
                    let recorder = if by.oin.is_empty() {
                        ensure(by.name == WITHHELD_NAME, || {
                            format!("withheld recorder named {by:?}")
                        })?;
                        None
                    } else {
                        Some(self.agency_of_oin(&by.oin).ok_or("unknown recorder OIN")?)
                    };
                    seen.insert(ix, recorder);
                }
                let want: BTreeMap<usize, Option<Agency>> = self
                    .model
                    .list_consents(agency, include_inactive)
                    .into_iter()
                    .map(|l| (l.consent, l.recorded_by))
                    .collect();
                ensure(seen == want, || {
                    format!("consents listed: gateway {seen:?}, model {want:?}")
                })
            }
            Step::Purge => {
                signaalpoort_server::purge_expired(&self.gw.running.gateway)
                    .await
                    .map_err(|e| format!("purge: {e}"))?;
                self.model.purge();
                Ok(())
            }
            Step::Advance { hours } => {
                self.clock.advance(Duration::hours(i64::from(hours)));
                self.model.advance(Duration::hours(i64::from(hours)));
                Ok(())
            }
        }
    }

    fn same_call_basis(&self, basis: i32, consent_id: &str, want: &model::CallBasis) -> Check {
        ensure(basis == basis_pb(want.basis) as i32, || {
            format!("basis {basis}, model {:?}", want.basis)
        })?;
        if want.basis == model::Basis::Consent {
            let ix = self.consent_ix(consent_id);
            ensure(ix.is_some_and(|i| want.consents.contains(&i)), || {
                format!(
                    "consent_id {consent_id} ({ix:?}), model one of {:?}",
                    want.consents
                )
            })?;
        }
        Ok(())
    }

    /// An Involvement as the model's `Seen` (consents: the one id given).
    fn seen(&self, i: &pb::Involvement) -> Result<model::Seen, String> {
        let team = i.contact.clone().unwrap_or_default().team;
        let signal = self
            .model
            .signal_by_team(&team)
            .ok_or_else(|| format!("an involvement with unknown contact {team:?}"))?;
        let a = i.agency.clone().unwrap_or_default();
        let agency = if i.withheld {
            ensure(
                a.oin.is_empty()
                    && a.name == WITHHELD_NAME
                    && a.role == pb::Role::Unspecified as i32
                    && i.category == pb::Category::Unspecified as i32,
                || format!("withheld involvement shows details: {i:?}"),
            )?;
            None
        } else {
            Some(
                self.agency_of_oin(&a.oin)
                    .ok_or_else(|| format!("unknown OIN {}", a.oin))?,
            )
        };
        let basis = if i.basis == pb::Basis::Consent as i32 {
            model::Basis::Consent
        } else if i.basis == pb::Basis::Safety as i32 {
            model::Basis::Safety
        } else {
            return Err(format!("involvement without a basis: {i:?}"));
        };
        Ok(model::Seen {
            signal,
            agency,
            category: if i.withheld {
                None
            } else {
                category_from(i.category)
            },
            team,
            level: if i.level == pb::MatchLevel::Household as i32 {
                Level::Household
            } else {
                Level::Subject
            },
            basis,
            consents: self.consent_ix(&i.consent_id).into_iter().collect(),
            safety_too: false,
        })
    }

    /// One observed involvement against the model's: equal, the consent id one of the model's.
    fn same_seen(got: &model::Seen, want: &model::Seen) -> bool {
        got.signal == want.signal
            && got.agency == want.agency
            && got.category == want.category
            && got.team == want.team
            && got.level == want.level
            && match (got.basis, want.basis) {
                (model::Basis::Consent, model::Basis::Consent) => {
                    got.consents.len() == 1 && got.consents.is_subset(&want.consents)
                }
                (model::Basis::Safety, model::Basis::Safety) => true,
                (model::Basis::Safety, model::Basis::Consent) => want.safety_too,
                (model::Basis::Consent, model::Basis::Safety) => false,
            }
    }

    fn same_seen_list(&self, mut got: Vec<model::Seen>, mut want: Vec<model::Seen>) -> Check {
        got.sort_by_key(|s| s.signal);
        want.sort_by_key(|s| s.signal);
        let ok =
            got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| Self::same_seen(g, w));
        ensure(ok, || {
            format!("involvements:\n  gateway {got:?}\n  model   {want:?}")
        })
    }

    /// ListNotifications by `a` after `after`; compares and adopts the gateway's order within one
    /// change's notifications (unspecified), and remembers the cursor to resume from.
    async fn poll(&mut self, a: Agency, after: u64, ask: Ask) -> Check {
        let got = self
            .client(a)
            .notifications
            .list_notifications(pb::ListNotificationsRequest {
                after_cursor: after,
                purpose: purpose_pb(ask.purpose) as i32,
                safety_justification: if ask.justified {
                    JUSTIFICATION.into()
                } else {
                    String::new()
                },
                page_size: 0,
            })
            .await;
        let want = self.model.read(a, after, ask);
        let got = match got {
            Ok(r) => r.into_inner(),
            Err(e) => return Err(format!("poll failed: {e:?}; model due {:?}", want.due)),
        };
        self.same_read(a, got, want)
    }

    /// A stream opened from cursor 0 for care coordination: everything up to its first heartbeat
    /// is its catch-up, and the heartbeat carries its cursor.
    async fn stream_from_zero(&mut self, a: Agency) -> Check {
        let ask = Ask {
            purpose: CareCoordination,
            justified: false,
        };
        let mut stream = self
            .client(a)
            .notifications
            .watch_notifications(pb::WatchNotificationsRequest {
                after_cursor: 0,
                purpose: purpose_pb(ask.purpose) as i32,
                safety_justification: String::new(),
            })
            .await
            .map_err(|e| format!("watch: {e:?}"))?
            .into_inner();
        let mut got = pb::ListNotificationsResponse::default();
        loop {
            let m = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
                .await
                .map_err(|_| "no heartbeat within 30 s".to_owned())?
                .map_err(|e| format!("stream: {e:?}"))?
                .ok_or("stream ended")?;
            got.cursor = m.cursor;
            match m.notification {
                Some(n) => got.notifications.push(n),
                None => break,
            }
        }
        let want = self.model.read(a, 0, ask);
        self.same_read(a, got, want)
    }

    fn same_read(
        &mut self,
        a: Agency,
        got: pb::ListNotificationsResponse,
        want: model::Read,
    ) -> Check {
        let describe = |got: &pb::ListNotificationsResponse| {
            format!(
                "gateway cursor {} {:?}\n  model cursor {} {:?}",
                got.cursor,
                got.notifications
                    .iter()
                    .map(|n| (
                        n.cursor,
                        n.kind,
                        n.your_signal_id.clone(),
                        n.other.clone().map(|o| o.contact.unwrap_or_default().team)
                    ))
                    .collect::<Vec<_>>(),
                want.cursor,
                want.due
                    .iter()
                    .map(|d| (
                        d.cursor,
                        d.kind,
                        d.your_signal,
                        d.other.team.clone(),
                        d.group
                    ))
                    .collect::<Vec<_>>()
            )
        };
        ensure(
            got.notifications.len() == want.due.len() && got.cursor == want.cursor,
            || describe(&got),
        )?;
        let mut matched = vec![false; want.due.len()];
        for (pos, n) in got.notifications.iter().enumerate() {
            let w = &want.due[pos];
            ensure(n.cursor == w.cursor, || {
                format!("cursor order: {}", describe(&got))
            })?;
            let kind = match pb::NotificationKind::try_from(n.kind) {
                Ok(pb::NotificationKind::Match) => model::Kind::Match,
                Ok(pb::NotificationKind::MatchEnded) => model::Kind::MatchEnded,
                other => return Err(format!("unexpected notification kind {other:?}")),
            };
            let your = self
                .signal_ix(&n.your_signal_id)
                .ok_or("a notification about an unknown own signal")?;
            let other = self.seen(
                n.other
                    .as_ref()
                    .ok_or("a match without the other involvement")?,
            )?;
            // Within one change's group, any order: find an unmatched model notification there.
            let candidates: Vec<usize> = (0..want.due.len())
                .filter(|&k| {
                    !matched[k] && (k == pos || (w.group.is_some() && want.due[k].group == w.group))
                })
                .collect();
            let hit = candidates.into_iter().find(|&k| {
                let d = &want.due[k];
                d.kind == kind
                    && d.your_signal == your
                    && Self::same_seen(&other, &d.other)
                    // The spec leaves open whether a notification names the call's basis or the
                    // disclosed involvement's: either is right.
                    && (n.basis == basis_pb(d.basis.basis) as i32
                        || n.basis == basis_pb(d.other.basis) as i32
                        || (d.other.safety_too && n.basis == pb::Basis::Safety as i32))
            });
            let Some(k) = hit else {
                return Err(format!(
                    "notification {n:?} not due here: {}",
                    describe(&got)
                ));
            };
            matched[k] = true;
            self.model.renumber(want.due[k].note, n.cursor);
        }
        if got.cursor > self.cursors.get(&a).copied().unwrap_or(0) {
            self.cursors.insert(a, got.cursor);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- running sequences

/// Runs one sequence on a fresh gateway; the first disagreement, with the steps that led to it.
async fn run_sequence(backend: Backend, steps: &[Step]) -> Check {
    let env = Env::new(backend).await;
    let mut world = World::new(&env).await;
    let mut result = Ok(());
    for (i, step) in steps.iter().enumerate() {
        if let Err(e) = world.run(step).await {
            result = Err(format!(
                "step {} ({step:?}) on {backend:?}: {e}\nthe sequence up to it:\n{}",
                i + 1,
                as_rust(&steps[..=i])
            ));
            break;
        }
    }
    // At the end, one stream from cursor 0 shows what polling showed, no more.
    if result.is_ok() {
        let a = CARE[steps.len() % CARE.len()];
        result = world
            .stream_from_zero(a)
            .await
            .map_err(|e| format!("stream from 0 by {a:?} after all steps on {backend:?}: {e}"));
    }
    world.gw.stop().await;
    result
}

/// Steps as Rust, to paste into a `regression(vec![...])` test.
fn as_rust(steps: &[Step]) -> String {
    let body: Vec<String> = steps
        .iter()
        .map(|s| format!("        Step::{s:?},"))
        .collect();
    format!("    regression(vec![\n{}\n    ]);", body.join("\n"))
}

fn cases() -> u32 {
    std::env::var("SIGNAALPOORT_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

fn property(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if backend == Backend::Postgres && !rt.block_on(postgres_available()) {
        return;
    }
    let mut runner = TestRunner::new(PropConfig {
        cases: cases(),
        max_shrink_iters: 300,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let result = runner.run(&sequence(), |steps| {
        rt.block_on(run_sequence(backend, &steps))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!(
            "the gateway disagrees with the model.\n{e}\n\nPaste the minimal sequence above as a \
             named regression test: `regression(vec![...])`"
        );
    }
}

// 24 generated sequences per backend by default (`SIGNAALPOORT_MODEL_CASES` for longer runs).
#[test]
fn generated_sequences_sqlite() {
    property(Backend::Sqlite);
}

#[test]
fn generated_sequences_postgres() {
    property(Backend::Postgres);
}

/// Runs a kept sequence on both backends.
fn regression(steps: Vec<Step>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && !rt.block_on(postgres_available()) {
            continue;
        }
        if let Err(e) = rt.block_on(run_sequence(backend, &steps)) {
            panic!("{e}");
        }
    }
}

/// A basis that appears later (a household declaration adding birth dates, then consent) delivers
/// the matches that arose before, once, from the last cursor.
#[test]
fn regression_consent_after_matches() {
    regression(vec![
        Step::Register {
            agency: Wij,
            person: 1,
            category: Parenting,
            short: false,
        },
        Step::Register {
            agency: Ggd,
            person: 1,
            category: Health,
            short: false,
        },
        Step::Declare {
            household: 0,
            members: vec![(0, false), (1, true), (3, true)],
        },
        Step::RecordConsent {
            agency: Wij,
            subject: 1,
            household: true,
            givers: 2,
            purposes: 1,
            named: 3,
            by_oin: false,
            short: false,
        },
        Step::Poll {
            agency: Ggd,
            purpose: CareCoordination,
            justified: false,
            from_zero: true,
        },
        Step::Advance { hours: 150 },
        Step::Query {
            agency: Wij,
            signal: 0,
            own: true,
            purpose: CareCoordination,
            justified: false,
        },
    ]);
}

/// An adult's signal (a mother of 40 with a declared birth date) keeps the lifetime asked for: only
/// a young person's signal ends by their 23rd birthday. (Found by a generated run: the model had
/// refused it.)
#[test]
fn regression_an_adults_signal_keeps_its_lifetime() {
    regression(vec![
        Step::Declare {
            household: 0,
            members: vec![(0, true), (1, false)],
        },
        Step::Register {
            agency: Wij,
            person: 0,
            category: Parenting,
            short: false,
        },
    ]);
}

/// A household match that formed and ended before the recipient had a basis: when the basis
/// appears (here the safety basis on a poll), the MATCH and then its MATCH_ENDED are delivered, in
/// order, in one pass. (Found by a generated run on PostgreSQL: the MATCH_ENDED was held back
/// because its MATCH had not been delivered before that pass began.)
#[test]
fn regression_a_match_and_its_end_held_together_are_delivered_together() {
    regression(vec![
        Step::Register {
            agency: Wij,
            person: 1,
            category: Parenting,
            short: false,
        },
        Step::Declare {
            household: 0,
            members: vec![(1, false), (2, false)],
        },
        Step::Register {
            agency: Jeugdhulp,
            person: 2,
            category: Parenting,
            short: false,
        },
        Step::Declare {
            household: 0,
            members: vec![(0, false), (1, false)],
        },
        Step::Poll {
            agency: Jeugdhulp,
            purpose: ChildSafety,
            justified: true,
            from_zero: false,
        },
    ]);
}
