//! The nine findings of issue 12, each as the end-to-end test that holds the gateway to the fix:
//! disclosure only on a basis *for the person* (SPEC-12.md), over real mutual TLS, on SQLite and
//! PostgreSQL, with an injected clock and birth dates from the municipality's declaration.

use signaalpoort_api::v1 as pb;
use signaalpoort_cli::client::AgencyClient;
use signaalpoort_core::access_log::DecisionCode;
use signaalpoort_server::{Clock, ManualClock};
use signaalpoort_tests::*;
use time::{Date, Duration};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

const CARE: pb::Purpose = pb::Purpose::CareCoordination;
const CASE: pb::Purpose = pb::Purpose::CaseCoordination;
const SAFETY: pb::Purpose = pb::Purpose::ChildSafety;
const WITHHELD: &str = "een betrokken professional";
const JUSTIFICATION: &str = "Acute zorg om de veiligheid van het kind, meldcode stap 5";
/// Heartbeats every second, so stream tests see the cursor a stream holds.
const FAST_HEARTBEAT: &str = "[limits]\nwatch_heartbeat_secs = 1\n";

both_backends!(
    consent_scope_mothers_own_consent_does_not_cover_her_child,
    age_rules_parents_consent_for_a_9_year_old_does_not_cover_a_17_year_old,
    age_rules_withdrawn_own_consent_of_a_14_year_old_ends_exchange_about_them,
    existence_oracle_register_signal_reveals_no_count,
    existence_oracle_denials_are_identical_whether_or_not_anything_exists,
    existence_oracle_cursors_move_only_with_deliveries,
    lost_notifications_matches_before_consent_reach_resuming_clients_once,
    bsns_and_invisible_characters_in_free_text_are_refused,
    request_id_is_bound_to_the_rpc_and_the_content,
    log_states_the_real_outcome_and_lists_compactly,
    volume_alerts_count_per_certificate_and_reserved_actors_are_refused,
    coordination_on_the_safety_basis_is_not_named_outside_it,
    coordination_naming_an_agency_outside_the_basis_answers_as_for_an_unknown_one,
    coordination_consenting_family_gets_a_coordinator_despite_agencies_outside_the_consent,
    coordination_history_and_chronicity_count_only_what_the_basis_covers,
    safety_basis_holds_per_person_when_a_consent_covers_only_the_callers_own,
);

// ---------------------------------------------------------------- helpers

struct World {
    _env: Env,
    clock: ManualClock,
    gw: Gateway,
}

async fn world(backend: Backend, extra: &str) -> World {
    world_with_audit(backend, extra, "").await
}

/// `audit`: lines for the `[audit]` table the dev configuration already has.
async fn world_with_audit(backend: Backend, extra: &str, audit: &str) -> World {
    let env = Env::new(backend).await;
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let path = env.write_config(extra);
    let text = std::fs::read_to_string(&path).expect("config");
    std::fs::write(
        &path,
        text.replacen("[audit]\n", &format!("[audit]\n{audit}"), 1),
    )
    .expect("config");
    let config = signaalpoort_server::Config::load(&path).expect("config loads");
    let running = signaalpoort_server::start(config, std::sync::Arc::new(clock.clone()))
        .await
        .expect("gateway starts");
    let gw = Gateway {
        endpoint: format!("https://{}", running.grpc_addr),
        pki: env.pki(),
        running,
    };
    World {
        _env: env,
        clock,
        gw,
    }
}

impl World {
    /// A birth date `years` (and `days` more) before today.
    fn born(&self, years: i32, days: i64) -> Date {
        let today = self.clock.now().date() - Duration::days(days);
        Date::from_calendar_date(today.year() - years, today.month(), today.day().min(28))
            .expect("date")
    }

    fn at(&self, days: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: self.clock.now().unix_timestamp() + days * 86_400,
            nanos: 0,
        })
    }

    async fn signal(
        &self,
        c: &mut AgencyClient,
        bsn: &str,
        category: pb::Category,
        team: &str,
    ) -> String {
        c.signals
            .register_signal(pb::RegisterSignalRequest {
                bsn: bsn.to_owned(),
                category: category as i32,
                contact: contact(team),
                expires_at: self.at(300),
                ..Default::default()
            })
            .await
            .expect("register")
            .into_inner()
            .signal
            .expect("signal")
            .signal_id
    }

    /// The municipality declares a household with birth dates (as from the BRP).
    async fn declare(&self, reference: &str, members: &[(&str, Date)]) {
        self.gw
            .client(GEMEENTE)
            .await
            .households
            .declare_household(pb::DeclareHouseholdRequest {
                household_ref: reference.to_owned(),
                members: members
                    .iter()
                    .map(|(b, born)| pb::HouseholdMember {
                        bsn: (*b).to_owned(),
                        protected: false,
                        birth_date: born.to_string(),
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("declare");
    }

    fn consent_request(
        &self,
        bsn: &str,
        include_household: bool,
        givers: &[pb::ConsentGiver],
        purposes: &[pb::Purpose],
        roles: &[pb::Role],
    ) -> pb::RecordConsentRequest {
        pb::RecordConsentRequest {
            bsn: bsn.to_owned(),
            include_household,
            givers: givers.iter().map(|g| *g as i32).collect(),
            purposes: purposes.iter().map(|p| *p as i32).collect(),
            roles: roles.iter().map(|r| *r as i32).collect(),
            valid_until: self.at(200),
            evidence_ref: "dossier/toestemming".into(),
            ..Default::default()
        }
    }

    async fn consent(
        &self,
        c: &mut AgencyClient,
        bsn: &str,
        include_household: bool,
        givers: &[pb::ConsentGiver],
        purposes: &[pb::Purpose],
        roles: &[pb::Role],
    ) -> String {
        c.consents
            .record_consent(self.consent_request(bsn, include_household, givers, purposes, roles))
            .await
            .expect("consent")
            .into_inner()
            .consent
            .expect("consent")
            .consent_id
    }
}

use pb::ConsentGiver::{ParentOrGuardian as PARENT, Subject as SUBJECT};

/// The contact teams of the involvements a query shows, sorted.
async fn teams(
    c: &mut AgencyClient,
    signal_id: &str,
    purpose: pb::Purpose,
) -> Result<Vec<String>, tonic::Status> {
    let r = c
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: signal_id.to_owned(),
            purpose: purpose as i32,
            safety_justification: if purpose == SAFETY {
                JUSTIFICATION.into()
            } else {
                String::new()
            },
        })
        .await?
        .into_inner();
    let mut t: Vec<String> = r
        .involvements
        .iter()
        .map(|i| i.contact.clone().unwrap_or_default().team)
        .collect();
    t.sort();
    Ok(t)
}

async fn poll(
    c: &mut AgencyClient,
    after: u64,
    purpose: pb::Purpose,
) -> pb::ListNotificationsResponse {
    c.notifications
        .list_notifications(pb::ListNotificationsRequest {
            after_cursor: after,
            purpose: purpose as i32,
            ..Default::default()
        })
        .await
        .expect("poll")
        .into_inner()
}

fn other_teams(notes: &[pb::Notification]) -> Vec<String> {
    notes
        .iter()
        .map(|n| {
            n.other
                .clone()
                .unwrap_or_default()
                .contact
                .unwrap_or_default()
                .team
        })
        .collect()
}

fn reason(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// Everything a caller sees of a status: code, message, and every detail.
fn seen(status: &tonic::Status) -> (Code, String, Vec<u8>) {
    (
        status.code(),
        status.message().to_owned(),
        status.details().to_vec(),
    )
}

type Watch = tonic::Streaming<pb::WatchNotificationsResponse>;

async fn watch(c: &mut AgencyClient, after: u64) -> Watch {
    c.notifications
        .watch_notifications(pb::WatchNotificationsRequest {
            after_cursor: after,
            purpose: CARE as i32,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner()
}

/// The next message on a stream; a stream that says nothing for 20 s has failed.
async fn next(w: &mut Watch) -> pb::WatchNotificationsResponse {
    tokio::time::timeout(std::time::Duration::from_secs(20), w.next())
        .await
        .expect("the stream sends a heartbeat at least every second")
        .expect("stream open")
        .expect("stream message")
}

/// The next heartbeat's cursor; fails on a notification.
async fn heartbeat(w: &mut Watch) -> u64 {
    let m = next(w).await;
    assert!(m.notification.is_none(), "unexpected notification {m:?}");
    m.cursor
}

// ---------------------------------------------------------------- 1. consent scope

/// A mother's own consent (include_household = false) names GGD and Accare: GGD, with its signal on
/// her, sees Accare's involvement with her, never Accare's signal on her 10-year-old.
async fn consent_scope_mothers_own_consent_does_not_cover_her_child(backend: Backend) {
    let w = world(backend, "").await;
    let (mother, child) = (bsn(1201), bsn(1202));
    let mut ggd = w.gw.client(GGD).await;
    let mut accare = w.gw.client(JEUGDHULP).await;
    let ggd_mother = w
        .signal(&mut ggd, &mother, pb::Category::Health, "JGZ moeder")
        .await;
    let accare_mother = w
        .signal(
            &mut accare,
            &mother,
            pb::Category::Parenting,
            "Accare moeder",
        )
        .await;
    let accare_child = w
        .signal(&mut accare, &child, pb::Category::YouthCare, "Accare kind")
        .await;
    w.declare(
        "hh-1201",
        &[(&mother, w.born(40, 0)), (&child, w.born(10, 0))],
    )
    .await;
    w.consent(
        &mut ggd,
        &mother,
        false,
        &[SUBJECT],
        &[CARE],
        &[pb::Role::Ggd, pb::Role::Jeugdhulp],
    )
    .await;

    assert_eq!(
        teams(&mut ggd, &ggd_mother, CARE).await.unwrap(),
        ["Accare moeder"]
    );
    assert_eq!(
        teams(&mut accare, &accare_mother, CARE).await.unwrap(),
        ["JGZ moeder"]
    );
    // About the child nothing is exchanged: no consent is in scope for the child.
    let denied = teams(&mut accare, &accare_child, CARE).await.unwrap_err();
    assert_eq!(deny_reason(&denied), "CONSENT_MISSING");
    // The same on polling: GGD learns of Accare's involvement with the mother only.
    let notes = poll(&mut ggd, 0, CARE).await;
    assert_eq!(other_teams(&notes.notifications), ["Accare moeder"]);
    assert_eq!(notes.cursor, 1);
    w.gw.stop().await;
}

// ---------------------------------------------------------------- 2. age rules per member

/// A parent's household consent recorded for a 9-year-old covers the siblings under 12 only: the
/// 17-year-old's mental-health involvement stays hidden, and Accare gets no basis from it.
async fn age_rules_parents_consent_for_a_9_year_old_does_not_cover_a_17_year_old(backend: Backend) {
    let w = world(backend, "").await;
    let (mother, nine, seventeen) = (bsn(1211), bsn(1212), bsn(1213));
    let mut wij = w.gw.client(WIJ).await;
    let mut ggd = w.gw.client(GGD).await;
    let mut accare = w.gw.client(JEUGDHULP).await;
    let wij_nine = w
        .signal(&mut wij, &nine, pb::Category::Parenting, "WIJ negen")
        .await;
    let ggd_nine = w
        .signal(&mut ggd, &nine, pb::Category::Health, "JGZ negen")
        .await;
    let accare_17 = w
        .signal(
            &mut accare,
            &seventeen,
            pb::Category::MentalHealth,
            "Accare zeventien",
        )
        .await;
    w.declare(
        "hh-1211",
        &[
            (&mother, w.born(41, 0)),
            (&nine, w.born(9, 10)),
            (&seventeen, w.born(17, 10)),
        ],
    )
    .await;
    w.consent(
        &mut wij,
        &nine,
        true,
        &[PARENT],
        &[CARE],
        &[pb::Role::Wij, pb::Role::Ggd, pb::Role::Jeugdhulp],
    )
    .await;

    assert_eq!(
        teams(&mut wij, &wij_nine, CARE).await.unwrap(),
        ["JGZ negen"]
    );
    assert_eq!(
        teams(&mut ggd, &ggd_nine, CARE).await.unwrap(),
        ["WIJ negen"]
    );
    let denied = teams(&mut accare, &accare_17, CARE).await.unwrap_err();
    assert_eq!(deny_reason(&denied), "AGE_RULE_NOT_MET");
    let notes = poll(&mut accare, 0, CARE).await;
    assert!(
        notes.notifications.is_empty() && notes.cursor == 0,
        "{notes:?}"
    );
    let notes = poll(&mut wij, 0, CARE).await;
    assert_eq!(other_teams(&notes.notifications), ["JGZ negen"]);
    w.gw.stop().await;
}

/// A 14-year-old consents with a parent; after the young person's consent is withdrawn, nothing
/// about them is exchanged any more, though the mother's household consent is still active.
async fn age_rules_withdrawn_own_consent_of_a_14_year_old_ends_exchange_about_them(
    backend: Backend,
) {
    let w = world(backend, "").await;
    let (mother, fourteen) = (bsn(1221), bsn(1222));
    let mut wij = w.gw.client(WIJ).await;
    let mut ggd = w.gw.client(GGD).await;
    let mut accare = w.gw.client(JEUGDHULP).await;
    let wij_mother = w
        .signal(&mut wij, &mother, pb::Category::Finances, "WIJ moeder")
        .await;
    let ggd_14 = w
        .signal(&mut ggd, &fourteen, pb::Category::Health, "JGZ veertien")
        .await;
    w.signal(
        &mut accare,
        &fourteen,
        pb::Category::MentalHealth,
        "Accare veertien",
    )
    .await;
    w.declare(
        "hh-1221",
        &[(&mother, w.born(42, 0)), (&fourteen, w.born(14, 30))],
    )
    .await;
    let roles = [pb::Role::Wij, pb::Role::Ggd, pb::Role::Jeugdhulp];
    w.consent(&mut wij, &mother, true, &[SUBJECT, PARENT], &[CARE], &roles)
        .await;
    let own = w
        .consent(
            &mut accare,
            &fourteen,
            false,
            &[SUBJECT, PARENT],
            &[CARE],
            &roles,
        )
        .await;

    assert_eq!(
        teams(&mut ggd, &ggd_14, CARE).await.unwrap(),
        ["Accare veertien", "WIJ moeder"]
    );
    let before = poll(&mut ggd, 0, CARE).await;
    assert_eq!(before.notifications.len(), 2, "{before:?}");

    accare
        .consents
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: own,
            ..Default::default()
        })
        .await
        .expect("withdraw");
    // The mother's consent does not cover a 14-year-old: from now on nothing about them.
    let denied = teams(&mut ggd, &ggd_14, CARE).await.unwrap_err();
    assert!(
        ["AGE_RULE_NOT_MET", "CONSENT_WITHDRAWN"].contains(&deny_reason(&denied).as_str()),
        "{denied:?}"
    );
    assert!(teams(&mut wij, &wij_mother, CARE).await.unwrap().is_empty());
    w.signal(
        &mut accare,
        &fourteen,
        pb::Category::YouthCare,
        "Accare tweede",
    )
    .await;
    let after = poll(&mut ggd, before.cursor, CARE).await;
    assert!(after.notifications.is_empty(), "{after:?}");
    assert_eq!(after.cursor, before.cursor);
    let wij_notes = poll(&mut wij, 0, CARE).await;
    assert!(wij_notes.notifications.is_empty(), "{wij_notes:?}");
    w.gw.stop().await;
}

// ---------------------------------------------------------------- 3. existence oracles

/// RegisterSignal answers the same whether or not anyone else is involved.
async fn existence_oracle_register_signal_reveals_no_count(backend: Backend) {
    let w = world(backend, "").await;
    let (alone, shared) = (bsn(1231), bsn(1232));
    let mut wij = w.gw.client(WIJ).await;
    let mut ggd = w.gw.client(GGD).await;
    w.signal(&mut ggd, &shared, pb::Category::Health, "JGZ")
        .await;
    let register = |person: &str| pb::RegisterSignalRequest {
        bsn: person.to_owned(),
        category: pb::Category::Parenting as i32,
        contact: contact("WIJ"),
        expires_at: w.at(100),
        ..Default::default()
    };
    let a = wij
        .signals
        .register_signal(register(&alone))
        .await
        .unwrap()
        .into_inner();
    let b = wij
        .signals
        .register_signal(register(&shared))
        .await
        .unwrap()
        .into_inner();
    let strip = |r: pb::RegisterSignalResponse| pb::RegisterSignalResponse { signal: None, ..r };
    assert_eq!(strip(a), strip(b));
    w.gw.stop().await;
}

/// A denial is the same whether or not others are involved, and whether a signal or consent id is
/// unknown or another agency's.
async fn existence_oracle_denials_are_identical_whether_or_not_anything_exists(backend: Backend) {
    let w = world(backend, "").await;
    let (alone, shared) = (bsn(1241), bsn(1242));
    let mut wij = w.gw.client(WIJ).await;
    let mut ggd = w.gw.client(GGD).await;
    let ggd_sig = w
        .signal(&mut ggd, &shared, pb::Category::Health, "JGZ")
        .await;
    let wij_alone = w
        .signal(&mut wij, &alone, pb::Category::Parenting, "WIJ")
        .await;
    let wij_shared = w
        .signal(&mut wij, &shared, pb::Category::Parenting, "WIJ")
        .await;

    let a = teams(&mut wij, &wij_alone, CARE).await.unwrap_err();
    let b = teams(&mut wij, &wij_shared, CARE).await.unwrap_err();
    assert_eq!(deny_reason(&a), "CONSENT_MISSING");
    assert_eq!(seen(&a), seen(&b));

    let unknown = teams(&mut wij, "00000000-0000-4000-8000-000000000000", CARE)
        .await
        .unwrap_err();
    let others = teams(&mut wij, &ggd_sig, CARE).await.unwrap_err();
    assert_eq!(deny_reason(&unknown), "NOT_INVOLVED");
    assert_eq!(seen(&unknown), seen(&others));

    let withdraw = |id: &str| pb::WithdrawSignalRequest {
        signal_id: id.to_owned(),
        ..Default::default()
    };
    let unknown = wij
        .signals
        .withdraw_signal(withdraw("00000000-0000-4000-8000-000000000000"))
        .await
        .unwrap_err();
    let others = wij
        .signals
        .withdraw_signal(withdraw(&ggd_sig))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(seen(&unknown), seen(&others));

    // A consent WIJ may not withdraw (it is not named, and not the recorder) looks unknown.
    let theirs = w
        .consent(
            &mut ggd,
            &shared,
            false,
            &[SUBJECT, PARENT],
            &[CARE],
            &[pb::Role::Ggd],
        )
        .await;
    let withdraw = |id: &str| pb::WithdrawConsentRequest {
        consent_id: id.to_owned(),
        ..Default::default()
    };
    let unknown = wij
        .consents
        .withdraw_consent(withdraw("00000000-0000-4000-8000-000000000000"))
        .await
        .unwrap_err();
    let others = wij
        .consents
        .withdraw_consent(withdraw(&theirs))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(seen(&unknown), seen(&others));
    w.gw.stop().await;
}

/// Cursors count deliveries only: polling and stream heartbeats stay at 0 while matches arise
/// that the caller has no basis to learn.
async fn existence_oracle_cursors_move_only_with_deliveries(backend: Backend) {
    let w = world(backend, FAST_HEARTBEAT).await;
    let child = bsn(1251);
    let mut wij = w.gw.client(WIJ).await;
    let mut ggd = w.gw.client(GGD).await;
    w.signal(&mut wij, &child, pb::Category::Parenting, "WIJ")
        .await;
    let mut stream = watch(&mut wij, 0).await;
    assert_eq!(heartbeat(&mut stream).await, 0);

    w.signal(&mut ggd, &child, pb::Category::Health, "JGZ")
        .await;
    w.signal(&mut ggd, &child, pb::Category::MentalHealth, "JGZ GGZ")
        .await;
    // Two heartbeats after the change: the stream has read it and delivered nothing.
    assert_eq!(heartbeat(&mut stream).await, 0);
    assert_eq!(heartbeat(&mut stream).await, 0);
    for c in [&mut wij, &mut ggd] {
        let r = poll(c, 0, CARE).await;
        assert!(r.notifications.is_empty() && r.cursor == 0, "{r:?}");
    }
    w.gw.stop().await;
}

// ---------------------------------------------------------------- 4. lost notifications

/// Matches that arose before consent reach a client resuming from its last cursor, once, on the
/// stream and on polling.
async fn lost_notifications_matches_before_consent_reach_resuming_clients_once(backend: Backend) {
    let w = world(backend, FAST_HEARTBEAT).await;
    let (mother, child) = (bsn(1261), bsn(1262));
    let mut wij = w.gw.client(WIJ).await;
    let mut ggd = w.gw.client(GGD).await;
    w.signal(&mut wij, &mother, pb::Category::Finances, "WIJ moeder")
        .await;
    w.signal(&mut ggd, &child, pb::Category::Health, "JGZ kind")
        .await;
    w.declare(
        "hh-1261",
        &[(&mother, w.born(38, 0)), (&child, w.born(8, 0))],
    )
    .await;
    let empty = poll(&mut ggd, 0, CARE).await;
    assert!(empty.notifications.is_empty() && empty.cursor == 0);
    let mut stream = watch(&mut wij, 0).await;
    assert_eq!(heartbeat(&mut stream).await, 0);

    w.consent(
        &mut wij,
        &mother,
        true,
        &[SUBJECT, PARENT],
        &[CARE],
        &[pb::Role::Wij, pb::Role::Ggd],
    )
    .await;

    // The open stream delivers the earlier match, then nothing more.
    let m = next(&mut stream).await;
    let n = m.notification.expect("the match that arose before consent");
    assert_eq!(n.kind, pb::NotificationKind::Match as i32);
    assert_eq!(other_teams(std::slice::from_ref(&n)), ["JGZ kind"]);
    assert_eq!((n.cursor, m.cursor), (1, 1));
    assert_eq!(heartbeat(&mut stream).await, 1);
    drop(stream);
    // Resuming from the last cursor repeats nothing.
    let mut resumed = watch(&mut wij, 1).await;
    assert_eq!(heartbeat(&mut resumed).await, 1);

    // Polling from the last cursor (0) gets GGD's side exactly once.
    let got = poll(&mut ggd, empty.cursor, CARE).await;
    assert_eq!(other_teams(&got.notifications), ["WIJ moeder"]);
    assert_eq!((got.notifications[0].cursor, got.cursor), (1, 1));
    let again = poll(&mut ggd, got.cursor, CARE).await;
    assert!(
        again.notifications.is_empty() && again.cursor == 1,
        "{again:?}"
    );
    w.gw.stop().await;
}

// ---------------------------------------------------------------- 5. BSNs in free text

/// A BSN written with separators.
fn dotted(b: &str) -> String {
    format!("{}.{}.{}", &b[..4], &b[4..6], &b[6..])
}

fn spaced(b: &str) -> String {
    format!("{} {} {}", &b[..3], &b[3..6], &b[6..])
}

/// Nine digits that fail the elfproef (the last digit changed).
fn not_a_bsn(b: &str) -> String {
    let last = b.as_bytes()[8] - b'0';
    format!("{}{}", &b[..8], (last + 1) % 10)
}

async fn bsns_and_invisible_characters_in_free_text_are_refused(backend: Backend) {
    let w = world(backend, "").await;
    let person = bsn(1271);
    let typed = bsn(1272);
    let mut wij = w.gw.client(WIJ).await;
    let sig = w
        .signal(&mut wij, &person, pb::Category::Parenting, "WIJ")
        .await;
    let before = w.gw.log_len().await;

    let register = |team: String, phone: &str, email: &str| pb::RegisterSignalRequest {
        bsn: person.clone(),
        category: pb::Category::Health as i32,
        contact: Some(pb::ContactPoint {
            team,
            phone: phone.to_owned(),
            email: email.to_owned(),
        }),
        expires_at: w.at(30),
        ..Default::default()
    };
    for bad in [
        format!("Team {typed}"),
        format!("Team {}", dotted(&typed)),
        format!("Team {}", spaced(&typed)),
        format!("Team {}", typed.replace("", "-").trim_matches('-')),
        "Team \u{202E}tsoO".to_owned(),
        "Te\u{200B}am".to_owned(),
        "Team\u{2066}Oost".to_owned(),
        "Team\u{FEFF}".to_owned(),
    ] {
        let e = wij
            .signals
            .register_signal(register(bad.clone(), "050 123 4567", ""))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&e), ["contact.team"], "{bad:?}: {e:?}");
    }
    let e = wij
        .signals
        .register_signal(register("Team".into(), &typed, ""))
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&e), ["contact.phone"], "{e:?}");
    for email in [format!("{typed}@wij.nl"), "team\u{200F}@wij.nl".to_owned()] {
        let e = wij
            .signals
            .register_signal(register("Team".into(), "050 123 4567", &email))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&e), ["contact.email"], "{email:?}: {e:?}");
    }
    // Nine digits failing the elfproef, or a BSN inside a longer number, are not BSNs.
    for fine in [
        format!("Team {}", not_a_bsn(&typed)),
        format!("Team 1{typed}"),
    ] {
        wij.signals
            .register_signal(register(fine.clone(), "050 123 4567", ""))
            .await
            .unwrap_or_else(|e| panic!("{fine:?} refused: {e:?}"));
    }

    let e = wij
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: sig.clone(),
            purpose: SAFETY as i32,
            safety_justification: format!("Zorgen om veiligheid van het kind {}", dotted(&typed)),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&e), ["safety_justification"], "{e:?}");
    let mut req = w.consent_request(
        &person,
        false,
        &[SUBJECT, PARENT],
        &[CARE],
        &[pb::Role::Wij],
    );
    req.evidence_ref = format!("dossier/{typed}");
    let e = wij.consents.record_consent(req).await.unwrap_err();
    assert_eq!(bad_fields(&e), ["evidence_ref"], "{e:?}");
    let e =
        w.gw.client(GEMEENTE)
            .await
            .households
            .declare_household(pb::DeclareHouseholdRequest {
                household_ref: format!("hh-{typed}"),
                members: vec![
                    pb::HouseholdMember {
                        bsn: person.clone(),
                        ..Default::default()
                    },
                    pb::HouseholdMember {
                        bsn: bsn(1273),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            })
            .await
            .unwrap_err();
    assert_eq!(bad_fields(&e), ["household_ref"], "{e:?}");
    let e = wij
        .signals
        .withdraw_signal(pb::WithdrawSignalRequest {
            request_id: typed.clone(),
            signal_id: sig.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&e), ["request_id"], "{e:?}");
    let e =
        w.gw.client_as(WIJ, &format!("medewerker-{typed}"))
            .await
            .signals
            .list_signals(pb::ListSignalsRequest::default())
            .await
            .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // None of it was stored: no access-log record carries the digits, in any form.
    let records =
        w.gw.store()
            .read()
            .export_log(before + 1, u64::MAX, 10_000)
            .await
            .expect("log");
    assert!(records.len() > 10);
    for r in records {
        let json = serde_json::to_string(&r.draft).expect("json");
        for form in [typed.clone(), dotted(&typed), spaced(&typed)] {
            assert!(!json.contains(&form), "{form} stored: {json}");
        }
    }
    // And the signal registrations refused changed nothing.
    let listed = wij
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    // The original, and one Health signal (registered, then refreshed by the second fine team).
    assert_eq!(listed.signals.len(), 2, "{listed:?}");
    w.gw.stop().await;
}

// ---------------------------------------------------------------- 6. idempotency keys

async fn request_id_is_bound_to_the_rpc_and_the_content(backend: Backend) {
    let w = world(backend, "").await;
    let (a, b) = (bsn(1281), bsn(1282));
    let mut wij = w.gw.client(WIJ).await;
    let register = |person: &str| pb::RegisterSignalRequest {
        request_id: "req-1281".into(),
        bsn: person.to_owned(),
        category: pb::Category::Parenting as i32,
        contact: contact("WIJ"),
        expires_at: w.at(30),
    };
    let first = wij
        .signals
        .register_signal(register(&a))
        .await
        .unwrap()
        .into_inner();
    // Same id, same content: the first answer again.
    let replay = wij
        .signals
        .register_signal(register(&a))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, replay);

    let reused = |e: &tonic::Status| {
        assert_eq!(bad_fields(e), ["request_id"], "{e:?}");
        assert_eq!(reason(e), "REQUEST_ID_REUSED", "{e:?}");
    };
    // Same id, another person: refused, and nothing registered.
    let before = w.gw.log_len().await;
    let e = wij.signals.register_signal(register(&b)).await.unwrap_err();
    reused(&e);
    // Same id on another RPC: the same error, never INTERNAL, the signal stays.
    let sig = first.signal.clone().unwrap().signal_id;
    let e = wij
        .signals
        .withdraw_signal(pb::WithdrawSignalRequest {
            request_id: "req-1281".into(),
            signal_id: sig.clone(),
        })
        .await
        .unwrap_err();
    reused(&e);
    let listed = wij
        .signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.signals.len(), 1);
    assert_eq!(listed.signals[0].signal_id, sig);
    // Both refusals are logged as what they were.
    let records =
        w.gw.store()
            .read()
            .export_log(before + 1, before + 2, 10)
            .await
            .unwrap();
    assert_eq!(records.len(), 2);
    for r in records {
        assert_eq!(r.draft.decision, DecisionCode::Deny, "{:?}", r.draft);
        assert_eq!(
            r.draft.status_code,
            Code::InvalidArgument as i32,
            "{:?}",
            r.draft
        );
    }
    w.gw.stop().await;
}

// ---------------------------------------------------------------- 7. the log states outcomes

/// The newest access-log record.
async fn last(gw: &Gateway) -> signaalpoort_core::access_log::RecordDraft {
    let store = gw.store().read();
    let (seq, _) = store.head().await.unwrap();
    store.export_log(seq, seq, 1).await.unwrap().remove(0).draft
}

async fn log_states_the_real_outcome_and_lists_compactly(backend: Backend) {
    let w = world(backend, "").await;
    let (x, y) = (bsn(1291), bsn(1292));
    let mut wij = w.gw.client(WIJ).await;
    let mut ggd = w.gw.client(GGD).await;
    let ggd_x = w.signal(&mut ggd, &x, pb::Category::Health, "JGZ").await;
    w.signal(&mut wij, &x, pb::Category::Parenting, "WIJ").await;
    w.signal(&mut wij, &y, pb::Category::Parenting, "WIJ").await;

    let e = wij
        .signals
        .withdraw_signal(pb::WithdrawSignalRequest {
            signal_id: ggd_x,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let r = last(&w.gw).await;
    assert_eq!(r.action, "WithdrawSignal");
    assert_eq!(r.decision, DecisionCode::Deny, "{r:?}");
    assert_eq!(r.status_code, Code::NotFound as i32, "{r:?}");
    assert_eq!(r.reason, "NOT_FOUND", "{r:?}");
    assert!(
        r.subjects.is_empty(),
        "another agency's signal names no person: {r:?}"
    );

    // Listing one's own signals discloses nothing about anyone: no persons in the record.
    wij.signals
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap();
    let r = last(&w.gw).await;
    assert_eq!(
        (r.action.as_str(), r.subjects.len()),
        ("ListSignals", 0),
        "{r:?}"
    );

    // ListConsents names only the persons about whom another agency's consent was shown.
    w.consent(
        &mut wij,
        &y,
        false,
        &[SUBJECT, PARENT],
        &[CARE],
        &[pb::Role::Wij],
    )
    .await;
    w.consent(
        &mut ggd,
        &x,
        false,
        &[SUBJECT, PARENT],
        &[CARE],
        &[pb::Role::Wij, pb::Role::Ggd],
    )
    .await;
    let listed = wij
        .consents
        .list_consents(pb::ListConsentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.consents.len(), 2);
    let r = last(&w.gw).await;
    assert_eq!(
        (r.action.as_str(), r.subjects.len()),
        ("ListConsents", 1),
        "{r:?}"
    );
    w.gw.stop().await;
}

// ---------------------------------------------------------------- 8. alerts per certificate

async fn volume_alerts_count_per_certificate_and_reserved_actors_are_refused(backend: Backend) {
    let w = world_with_audit(
        backend,
        "",
        "unusual_volume_threshold = 3\nunusual_volume_window_secs = 3600\n",
    )
    .await;
    // A fresh actor id for every lookup, each on another person: the certificate is one.
    for i in 0..5 {
        let mut c = w.gw.client_as(WIJ, &format!("wisselend-{i}")).await;
        w.signal(&mut c, &bsn(1300 + i), pb::Category::Parenting, "WIJ")
            .await;
    }
    let alerts = w.gw.store().read().alerts_after(0, 100).await.unwrap();
    let wij_oin = signaalpoort_tls::devpki::default_dev_agencies()
        .into_iter()
        .find(|a| a.slug == WIJ)
        .unwrap()
        .oin;
    assert!(
        alerts.iter().any(|a| a.agency_oin == wij_oin),
        "no unusual-volume alert for the certificate: {alerts:?}"
    );

    for reserved in ["system", "SYSTEM", "System", "system:purge"] {
        let before = w.gw.log_len().await;
        let e =
            w.gw.client_as(WIJ, reserved)
                .await
                .signals
                .list_signals(pb::ListSignalsRequest::default())
                .await
                .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{reserved}: {e:?}");
        let records =
            w.gw.store()
                .read()
                .export_log(before + 1, u64::MAX, 10)
                .await
                .unwrap();
        assert!(
            records.iter().all(|r| r.draft.actor_id != reserved),
            "a caller's record carries the reserved actor {reserved}"
        );
    }
    w.gw.stop().await;
}

// ---------------------------------------------------------------- 9. case coordination

fn case(signal_id: &str, purpose: pb::Purpose) -> Option<pb::CaseRef> {
    Some(pb::CaseRef {
        your_signal_id: signal_id.to_owned(),
        purpose: purpose as i32,
        safety_justification: if purpose == SAFETY {
            JUSTIFICATION.into()
        } else {
            String::new()
        },
    })
}

fn oin_of(slug: &str) -> String {
    signaalpoort_tls::devpki::default_dev_agencies()
        .into_iter()
        .find(|a| a.slug == slug)
        .expect("dev agency")
        .oin
}

async fn coordination(
    c: &mut AgencyClient,
    signal_id: &str,
    purpose: pb::Purpose,
) -> pb::Coordination {
    c.coordination
        .get_coordination(pb::GetCoordinationRequest {
            case: case(signal_id, purpose),
        })
        .await
        .expect("get coordination")
        .into_inner()
        .coordination
        .expect("coordination")
}

async fn propose(
    c: &mut AgencyClient,
    signal_id: &str,
    purpose: pb::Purpose,
    coordinator_oin: &str,
    team: &str,
) -> Result<pb::Coordination, tonic::Status> {
    c.coordination
        .propose_coordinator(pb::ProposeCoordinatorRequest {
            case: case(signal_id, purpose),
            coordinator_oin: coordinator_oin.to_owned(),
            contact: contact(team),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().coordination.expect("coordination"))
}

async fn respond(
    c: &mut AgencyClient,
    signal_id: &str,
    purpose: pb::Purpose,
    proposal_id: &str,
    team: Option<&str>,
) -> pb::Coordination {
    c.coordination
        .respond_to_proposal(pb::RespondToProposalRequest {
            case: case(signal_id, purpose),
            proposal_id: proposal_id.to_owned(),
            accept: true,
            contact: team.and_then(contact),
            ..Default::default()
        })
        .await
        .expect("respond")
        .into_inner()
        .coordination
        .expect("coordination")
}

/// Mother (WIJ) and an 8-year-old (GGD), Veilig Thuis with a safety signal on each; the mother's household
/// consent names WIJ and GGD only, for case and care coordination.
struct Case {
    w: World,
    wij: AgencyClient,
    ggd: AgencyClient,
    vt: AgencyClient,
    wij_sig: String,
    ggd_sig: String,
    vt_sig: String,
    child: String,
}

async fn family_case(backend: Backend, n: u32) -> Case {
    let w = world(backend, "").await;
    let (mother, child) = (bsn(n), bsn(n + 1));
    let mut wij = w.gw.client(WIJ).await;
    let mut ggd = w.gw.client(GGD).await;
    let mut vt = w.gw.client(VEILIG_THUIS).await;
    let wij_sig = w
        .signal(&mut wij, &mother, pb::Category::Finances, "WIJ Oost")
        .await;
    let ggd_sig = w
        .signal(&mut ggd, &child, pb::Category::Health, "JGZ")
        .await;
    let vt_sig = w
        .signal(&mut vt, &child, pb::Category::Safety, "VT regie")
        .await;
    w.signal(&mut vt, &mother, pb::Category::Safety, "VT moeder")
        .await;
    w.declare(
        &format!("hh-{n}"),
        &[(&mother, w.born(36, 0)), (&child, w.born(8, 0))],
    )
    .await;
    w.consent(
        &mut wij,
        &mother,
        true,
        &[SUBJECT, PARENT],
        &[CASE, CARE],
        &[pb::Role::Wij, pb::Role::Ggd],
    )
    .await;
    Case {
        w,
        wij,
        ggd,
        vt,
        wij_sig,
        ggd_sig,
        vt_sig,
        child,
    }
}

/// Veilig Thuis proposes itself on the safety basis. WIJ, whose basis is the consent, is asked
/// (Veilig Thuis may know WIJ) but never learns who proposed, who accepted outside its basis, or
/// who coordinates: "a professional is involved; contact via …", as QueryInvolvement says.
async fn coordination_on_the_safety_basis_is_not_named_outside_it(backend: Backend) {
    let mut c = family_case(backend, 1310).await;
    let mut accare = c.w.gw.client(JEUGDHULP).await;
    let accare_sig =
        c.w.signal(&mut accare, &c.child, pb::Category::YouthCare, "Accare")
            .await;
    let proposed = propose(&mut c.vt, &c.vt_sig, SAFETY, "", "VT regie")
        .await
        .unwrap();
    let proposal = proposed.open_proposal.expect("open proposal");
    let mut asked = proposal.awaiting.clone();
    asked.sort();
    assert_eq!(asked, [oin_of(WIJ), oin_of(GGD), oin_of(JEUGDHULP)]);
    // Accare answers on the safety basis; WIJ does not learn of Accare or of Veilig Thuis.
    respond(
        &mut accare,
        &accare_sig,
        SAFETY,
        &proposal.proposal_id,
        None,
    )
    .await;
    let seen = coordination(&mut c.wij, &c.wij_sig, CASE).await;
    let open = seen.open_proposal.expect("open proposal");
    for who in [open.proposed_by.unwrap(), open.proposed.unwrap()] {
        assert_eq!(
            (who.name.as_str(), who.oin.as_str()),
            (WITHHELD, ""),
            "{who:?}"
        );
        assert_eq!(who.role, pb::Role::Unspecified as i32);
    }
    assert!(open.accepted_by.is_empty(), "{:?}", open.accepted_by);
    let mut awaiting = open.awaiting.clone();
    awaiting.sort();
    assert_eq!(awaiting, [oin_of(WIJ), oin_of(GGD)]);

    respond(&mut c.wij, &c.wij_sig, CASE, &proposal.proposal_id, None).await;
    respond(&mut c.ggd, &c.ggd_sig, CASE, &proposal.proposal_id, None).await;
    let seen = coordination(&mut c.wij, &c.wij_sig, CASE).await;
    let coordinator = seen.coordinator.expect("a coordinator");
    assert_eq!(
        (coordinator.name.as_str(), coordinator.oin.as_str()),
        (WITHHELD, "")
    );
    assert_eq!(
        seen.coordinator_contact.unwrap_or_default().team,
        "VT regie"
    );
    // As QueryInvolvement: Veilig Thuis and Accare are not shown to WIJ at all.
    assert_eq!(teams(&mut c.wij, &c.wij_sig, CASE).await.unwrap(), ["JGZ"]);
    // Veilig Thuis sees itself named.
    let vt_view = coordination(&mut c.vt, &c.vt_sig, SAFETY).await;
    assert_eq!(vt_view.coordinator.unwrap().oin, oin_of(VEILIG_THUIS));
    c.w.gw.stop().await;
}

/// Proposing or handing over to an agency outside the proposer's basis answers exactly as for one
/// that is not involved at all, or unknown.
async fn coordination_naming_an_agency_outside_the_basis_answers_as_for_an_unknown_one(
    backend: Backend,
) {
    let mut c = family_case(backend, 1320).await;
    let outside = propose(&mut c.wij, &c.wij_sig, CASE, &oin_of(VEILIG_THUIS), "x")
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::FailedPrecondition, "{outside:?}");
    assert_eq!(reason(&outside), "COORDINATOR_NOT_ELIGIBLE");
    for other in [oin_of(JEUGDHULP), "00000099999999999999".to_owned()] {
        let e = propose(&mut c.wij, &c.wij_sig, CASE, &other, "x")
            .await
            .unwrap_err();
        assert_eq!(seen(&e), seen(&outside));
    }
    // WIJ becomes coordinator; a hand-over to Veilig Thuis is refused as to an unknown agency.
    let p = propose(&mut c.wij, &c.wij_sig, CASE, "", "WIJ regie")
        .await
        .unwrap();
    let id = p.open_proposal.unwrap().proposal_id;
    respond(&mut c.ggd, &c.ggd_sig, CASE, &id, None).await;
    let hand_over = |to: String| pb::HandOverRequest {
        case: case(&c.wij_sig, CASE),
        to_oin: to,
        ..Default::default()
    };
    let outside = c
        .wij
        .coordination
        .hand_over(hand_over(oin_of(VEILIG_THUIS)))
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::FailedPrecondition, "{outside:?}");
    assert_eq!(reason(&outside), "COORDINATOR_NOT_ELIGIBLE");
    let none = c
        .wij
        .coordination
        .hand_over(hand_over(oin_of(JEUGDHULP)))
        .await
        .unwrap_err();
    assert_eq!(seen(&none), seen(&outside));
    c.w.gw.stop().await;
}

/// The gemeente and Veilig Thuis are involved outside the consent: they are neither asked nor
/// waited for, so WIJ's proposal is settled by GGD alone.
async fn coordination_consenting_family_gets_a_coordinator_despite_agencies_outside_the_consent(
    backend: Backend,
) {
    let mut c = family_case(backend, 1330).await;
    let mut gemeente = c.w.gw.client(GEMEENTE).await;
    c.w.signal(
        &mut gemeente,
        &c.child,
        pb::Category::Finances,
        "Schuldhulp",
    )
    .await;
    let p = propose(&mut c.wij, &c.wij_sig, CASE, "", "WIJ regie")
        .await
        .unwrap();
    let open = p.open_proposal.unwrap();
    assert_eq!(open.awaiting, [oin_of(GGD)]);
    let done = respond(&mut c.ggd, &c.ggd_sig, CASE, &open.proposal_id, None).await;
    assert_eq!(done.coordinator.expect("coordinator").oin, oin_of(WIJ));
    assert!(done.open_proposal.is_none());
    let ggd_view = coordination(&mut c.ggd, &c.ggd_sig, CASE).await;
    assert_eq!(ggd_view.coordinator.unwrap().oin, oin_of(WIJ));
    // Veilig Thuis, on the safety basis, may know everyone: it sees WIJ named.
    let vt_view = coordination(&mut c.vt, &c.vt_sig, SAFETY).await;
    assert_eq!(vt_view.coordinator.unwrap().oin, oin_of(WIJ));
    c.w.gw.stop().await;
}

/// WIJ coordinates on the family's consent (WIJ and GGD): history and chronicity count only WIJ's
/// and GGD's involvement, never Veilig Thuis's safety signals.
async fn coordination_history_and_chronicity_count_only_what_the_basis_covers(backend: Backend) {
    let mut c = family_case(backend, 1340).await;
    let p = propose(&mut c.wij, &c.wij_sig, CASE, "", "WIJ regie")
        .await
        .unwrap();
    respond(
        &mut c.ggd,
        &c.ggd_sig,
        CASE,
        &p.open_proposal.unwrap().proposal_id,
        None,
    )
    .await;

    let history = c
        .wij
        .coordination
        .get_history(pb::GetHistoryRequest {
            case: case(&c.wij_sig, CASE),
        })
        .await
        .unwrap()
        .into_inner();
    let registered: u32 = history.periods.iter().map(|p| p.signals_registered).sum();
    assert_eq!(registered, 2, "{history:?}");
    for p in &history.periods {
        assert!(p.distinct_agencies <= 2, "{p:?}");
        assert!(
            !p.categories.contains(&(pb::Category::Safety as i32)),
            "a safety category counted: {p:?}"
        );
    }
    let chronicity = c
        .wij
        .coordination
        .get_chronicity(pb::GetChronicityRequest {
            case: case(&c.wij_sig, CASE),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !chronicity.indicated && chronicity.triggered_by.is_empty(),
        "{chronicity:?}"
    );
    // Veilig Thuis on the safety basis counts everything, its safety signals included.
    let vt =
        c.vt.coordination
            .get_chronicity(pb::GetChronicityRequest {
                case: case(&c.vt_sig, SAFETY),
            })
            .await
            .unwrap()
            .into_inner();
    assert!(
        vt.triggered_by.iter().any(|t| t.contains("safety")),
        "{vt:?}"
    );
    c.w.gw.stop().await;
}

// ---------------------------------------------------------------- safety basis per person

/// Veilig Thuis asks on the safety basis, with a justification, about a mother whose own consent
/// (herself only) names Veilig Thuis and GGD for child safety. The consent is the basis for the
/// mother's GGD involvement; the child's youth-care involvement, which no consent covers, is shown on
/// the safety basis the call invoked — the call is flagged for review and its justification kept.
/// Without the justification the child's involvement stays hidden.
async fn safety_basis_holds_per_person_when_a_consent_covers_only_the_callers_own(
    backend: Backend,
) {
    let w = world(backend, "").await;
    let (mother, child) = (bsn(1291), bsn(1292));
    let mut vt = w.gw.client(VEILIG_THUIS).await;
    let mut ggd = w.gw.client(GGD).await;
    let mut accare = w.gw.client(JEUGDHULP).await;
    let vt_mother = w
        .signal(&mut vt, &mother, pb::Category::Safety, "VT moeder")
        .await;
    w.signal(&mut ggd, &mother, pb::Category::Health, "JGZ moeder")
        .await;
    w.signal(&mut accare, &child, pb::Category::YouthCare, "Accare kind")
        .await;
    w.declare(
        "hh-1291",
        &[(&mother, w.born(38, 0)), (&child, w.born(6, 0))],
    )
    .await;
    let consent_id = w
        .consent(
            &mut vt,
            &mother,
            false,
            &[SUBJECT],
            &[SAFETY],
            &[pb::Role::VeiligThuis, pb::Role::Ggd],
        )
        .await;

    let ask = |justification: &str| pb::QueryInvolvementRequest {
        signal_id: vt_mother.clone(),
        purpose: SAFETY as i32,
        safety_justification: justification.to_owned(),
    };
    let answer = vt
        .signals
        .query_involvement(ask(JUSTIFICATION))
        .await
        .expect("justified query")
        .into_inner();
    let mut seen: Vec<(String, i32, String)> = answer
        .involvements
        .iter()
        .map(|i| {
            (
                i.contact.clone().unwrap_or_default().team,
                i.basis,
                i.consent_id.clone(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "Accare kind".to_owned(),
                pb::Basis::Safety as i32,
                String::new()
            ),
            (
                "JGZ moeder".to_owned(),
                pb::Basis::Consent as i32,
                consent_id.clone()
            ),
        ]
    );
    let record = last(&w.gw).await;
    assert!(record.flagged_for_review, "{record:?}");
    assert_eq!(record.justification, JUSTIFICATION);

    // Without a justification only the consent holds, and it covers the mother alone.
    let answer = vt
        .signals
        .query_involvement(ask(""))
        .await
        .expect("consent query")
        .into_inner();
    let teams: Vec<String> = answer
        .involvements
        .iter()
        .map(|i| i.contact.clone().unwrap_or_default().team)
        .collect();
    assert_eq!(teams, ["JGZ moeder"]);
    let record = last(&w.gw).await;
    assert!(!record.flagged_for_review, "{record:?}");
    w.gw.stop().await;
}
