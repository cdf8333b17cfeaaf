//! Case coordination (casusregie), reminders, the involvement history in counts and the chronicity
//! indicator, end to end over mutual TLS with an injected clock.

use signaalpoort_api::v1 as pb;
use signaalpoort_cli::client::AgencyClient;
use signaalpoort_server::{Clock, ManualClock};
use signaalpoort_tests::*;
use tonic::Code;

const CASE: pb::Purpose = pb::Purpose::CaseCoordination;

fn at(clock: &ManualClock, days_ahead: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: clock.now().unix_timestamp() + days_ahead * 86_400,
        nanos: 0,
    })
}

/// A signal valid for almost two years from the clock's now.
async fn signal(
    c: &mut AgencyClient,
    clock: &ManualClock,
    bsn: &str,
    category: pb::Category,
    team: &str,
) -> String {
    c.signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: bsn.to_owned(),
            category: category as i32,
            contact: contact(team),
            expires_at: at(clock, 700),
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .signal
        .expect("signal")
        .signal_id
}

/// The parents consent, household-wide, to case coordination among care roles.
async fn household_consent(c: &mut AgencyClient, clock: &ManualClock, parent: &str) {
    c.consents
        .record_consent(pb::RecordConsentRequest {
            bsn: parent.to_owned(),
            include_household: true,
            // As herself and as parent: it covers her and the household's children under 12.
            givers: vec![
                pb::ConsentGiver::Subject as i32,
                pb::ConsentGiver::ParentOrGuardian as i32,
            ],
            purposes: vec![CASE as i32, pb::Purpose::CareCoordination as i32],
            roles: vec![
                pb::Role::Wij as i32,
                pb::Role::Ggd as i32,
                pb::Role::Jeugdhulp as i32,
            ],
            valid_until: at(clock, 700),
            evidence_ref: "dossier-1/toestemming".into(),
            ..Default::default()
        })
        .await
        .expect("consent");
}

fn case(signal_id: &str) -> Option<pb::CaseRef> {
    Some(pb::CaseRef {
        your_signal_id: signal_id.to_owned(),
        purpose: CASE as i32,
        safety_justification: String::new(),
    })
}

fn team(name: &str) -> Option<pb::ContactPoint> {
    Some(pb::ContactPoint {
        team: name.to_owned(),
        phone: "050 123 4567".into(),
        email: String::new(),
    })
}

struct Family {
    wij: AgencyClient,
    ggd: AgencyClient,
    accare: AgencyClient,
    wij_sig: String,
    ggd_sig: String,
    accare_sig: String,
}

/// Mother (WIJ) and child (GGD, Accare) in one declared household, with consent.
async fn family(gw: &Gateway, clock: &ManualClock, n: u32) -> Family {
    let (mother, child) = (bsn(n), bsn(n + 1));
    // A toddler: the mother's consent as parent covers the child through the years the tests span.
    declare_aged(
        &mut gw.client(GEMEENTE).await,
        &format!("hh-{n}"),
        clock.now().date(),
        &[(&mother, 35), (&child, 1)],
    )
    .await;
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    let mut accare = gw.client(JEUGDHULP).await;
    let wij_sig = signal(&mut wij, clock, &mother, pb::Category::Finances, "WIJ Oost").await;
    let ggd_sig = signal(&mut ggd, clock, &child, pb::Category::Health, "JGZ").await;
    let accare_sig = signal(
        &mut accare,
        clock,
        &child,
        pb::Category::MentalHealth,
        "Accare",
    )
    .await;
    household_consent(&mut wij, clock, &mother).await;
    Family {
        wij,
        ggd,
        accare,
        wij_sig,
        ggd_sig,
        accare_sig,
    }
}

async fn coordination_of(c: &mut AgencyClient, signal_id: &str) -> pb::Coordination {
    c.coordination
        .get_coordination(pb::GetCoordinationRequest {
            case: case(signal_id),
        })
        .await
        .expect("get coordination")
        .into_inner()
        .coordination
        .expect("coordination")
}

fn coordinator_name(c: &pb::Coordination) -> Option<String> {
    c.coordinator.as_ref().map(|a| a.name.clone())
}

async fn propose_accept_decline_hand_over_step_down(backend: Backend) {
    let env = Env::new(backend).await;
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let gw = env.start(&clock).await;
    let mut f = family(&gw, &clock, 700).await;

    // WIJ proposes itself; GGD and Accare are asked.
    let proposed = f
        .wij
        .coordination
        .propose_coordinator(pb::ProposeCoordinatorRequest {
            case: case(&f.wij_sig),
            contact: team("WIJ Oost, casusregisseur"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .coordination
        .unwrap();
    let proposal = proposed.open_proposal.clone().expect("open proposal");
    assert_eq!(proposal.awaiting.len(), 2);
    assert!(proposed.coordinator.is_none());

    // A conflicting proposal while one is open is refused, and says why.
    let conflict = f
        .ggd
        .coordination
        .propose_coordinator(pb::ProposeCoordinatorRequest {
            case: case(&f.ggd_sig),
            contact: team("JGZ"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::FailedPrecondition, "{conflict:?}");
    assert!(conflict.message().contains("already open"), "{conflict:?}");

    // GGD accepts, Accare declines: no coordinator.
    let respond =
        |sig: &str, accept: bool, contact: Option<pb::ContactPoint>| pb::RespondToProposalRequest {
            case: case(sig),
            proposal_id: proposal.proposal_id.clone(),
            accept,
            contact,
            ..Default::default()
        };
    f.ggd
        .coordination
        .respond_to_proposal(respond(&f.ggd_sig, true, None))
        .await
        .unwrap();
    let declined = f
        .accare
        .coordination
        .respond_to_proposal(respond(&f.accare_sig, false, None))
        .await
        .unwrap()
        .into_inner()
        .coordination
        .unwrap();
    assert!(declined.coordinator.is_none() && declined.open_proposal.is_none());

    // WIJ proposes GGD; GGD accepts with its contact point, Accare accepts: GGD coordinates.
    let p2 = f
        .wij
        .coordination
        .propose_coordinator(pb::ProposeCoordinatorRequest {
            case: case(&f.wij_sig),
            coordinator_oin: gw_oin(&gw, GGD).await,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .coordination
        .unwrap()
        .open_proposal
        .unwrap();
    let answer = |sig: &str, contact| pb::RespondToProposalRequest {
        case: case(sig),
        proposal_id: p2.proposal_id.clone(),
        accept: true,
        contact,
        ..Default::default()
    };
    // The proposed coordinator must say how it is reached.
    let no_contact = f
        .ggd
        .coordination
        .respond_to_proposal(answer(&f.ggd_sig, None))
        .await
        .unwrap_err();
    assert_eq!(no_contact.code(), Code::FailedPrecondition);
    f.ggd
        .coordination
        .respond_to_proposal(answer(&f.ggd_sig, team("JGZ, regie")))
        .await
        .unwrap();
    f.accare
        .coordination
        .respond_to_proposal(answer(&f.accare_sig, None))
        .await
        .unwrap();
    for (c, sig) in [
        (&mut f.wij, &f.wij_sig),
        (&mut f.accare, &f.accare_sig),
        (&mut f.ggd, &f.ggd_sig),
    ] {
        let seen = coordination_of(c, sig).await;
        assert_eq!(coordinator_name(&seen).as_deref(), Some("GGD Groningen"));
        assert_eq!(
            seen.coordinator_contact.as_ref().map(|c| c.team.as_str()),
            Some("JGZ, regie")
        );
    }
    // Every involved agency was told, on the notification stream.
    let notes = f
        .wij
        .notifications
        .list_notifications(pb::ListNotificationsRequest {
            purpose: CASE as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert!(
        notes
            .iter()
            .any(|n| n.kind == pb::NotificationKind::Coordination as i32
                && n.coordination_event == "ACCEPTED"),
        "{notes:?}"
    );

    // Only the coordinator hands over or steps down.
    let not_coordinator = f
        .wij
        .coordination
        .step_down(pb::StepDownRequest {
            case: case(&f.wij_sig),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&not_coordinator), "NOT_COORDINATOR");
    // GGD hands over to Accare, which accepts.
    let hand_over = f
        .ggd
        .coordination
        .hand_over(pb::HandOverRequest {
            case: case(&f.ggd_sig),
            to_oin: gw_oin(&gw, JEUGDHULP).await,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .coordination
        .unwrap()
        .open_proposal
        .unwrap();
    assert!(hand_over.is_hand_over);
    f.accare
        .coordination
        .respond_to_proposal(pb::RespondToProposalRequest {
            case: case(&f.accare_sig),
            proposal_id: hand_over.proposal_id,
            accept: true,
            contact: team("Accare, regie"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        coordinator_name(&coordination_of(&mut f.wij, &f.wij_sig).await).as_deref(),
        Some("Accare Jeugdhulp")
    );
    // Accare steps down.
    let after = f
        .accare
        .coordination
        .step_down(pb::StepDownRequest {
            case: case(&f.accare_sig),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .coordination
        .unwrap();
    assert!(after.coordinator.is_none());
    gw.stop().await;
}

async fn gw_oin(gw: &Gateway, slug: &str) -> String {
    let pem = std::fs::read(gw.pki.join("agencies").join(format!("{slug}.pem"))).unwrap();
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .unwrap()
        .unwrap();
    signaalpoort_tls::parse_peer_certificate(der.as_ref())
        .unwrap()
        .oin
        .unwrap()
}

async fn a_coordinator_whose_signal_ends_lapses(backend: Backend) {
    let env = Env::new(backend).await;
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let gw = env.start(&clock).await;
    let mut f = family(&gw, &clock, 720).await;
    let p = f
        .ggd
        .coordination
        .propose_coordinator(pb::ProposeCoordinatorRequest {
            case: case(&f.ggd_sig),
            contact: team("JGZ"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .coordination
        .unwrap()
        .open_proposal
        .unwrap();
    for (c, sig) in [(&mut f.wij, &f.wij_sig), (&mut f.accare, &f.accare_sig)] {
        c.coordination
            .respond_to_proposal(pb::RespondToProposalRequest {
                case: case(sig),
                proposal_id: p.proposal_id.clone(),
                accept: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_eq!(
        coordinator_name(&coordination_of(&mut f.wij, &f.wij_sig).await).as_deref(),
        Some("GGD Groningen")
    );
    f.ggd
        .signals
        .withdraw_signal(pb::WithdrawSignalRequest {
            signal_id: f.ggd_sig.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // GGD is no longer involved: nobody coordinates, and a new proposal can be made.
    assert!(coordination_of(&mut f.wij, &f.wij_sig)
        .await
        .coordinator
        .is_none());
    f.wij
        .coordination
        .propose_coordinator(pb::ProposeCoordinatorRequest {
            case: case(&f.wij_sig),
            contact: team("WIJ"),
            ..Default::default()
        })
        .await
        .unwrap();
    gw.stop().await;
}

async fn reminders_follow_the_clock(backend: Backend) {
    let env = Env::new(backend).await;
    let clock = ManualClock::new(time::OffsetDateTime::now_utc());
    let gw = env.start(&clock).await;
    let f = family(&gw, &clock, 740).await;
    let gateway = gw.running.gateway.clone();
    assert_eq!(
        signaalpoort_server::send_coordination_reminders(&gateway)
            .await
            .unwrap(),
        0
    );
    clock.advance(time::Duration::days(27));
    assert_eq!(
        signaalpoort_server::send_coordination_reminders(&gateway)
            .await
            .unwrap(),
        0
    );
    clock.advance(time::Duration::days(2));
    assert_eq!(
        signaalpoort_server::send_coordination_reminders(&gateway)
            .await
            .unwrap(),
        1
    );
    // Not again until another period has passed.
    assert_eq!(
        signaalpoort_server::send_coordination_reminders(&gateway)
            .await
            .unwrap(),
        0
    );
    let mut wij = f.wij;
    let notes = wij
        .notifications
        .list_notifications(pb::ListNotificationsRequest {
            purpose: CASE as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert!(
        notes
            .iter()
            .any(|n| n.kind == pb::NotificationKind::CoordinationReminder as i32),
        "{notes:?}"
    );

    // A Veilig Thuis safety signal shortens the wait to a week.
    let (mother, child) = (bsn(760), bsn(761));
    declare_aged(
        &mut gw.client(GEMEENTE).await,
        "hh-760",
        clock.now().date(),
        &[(&mother, 30), (&child, 3)],
    )
    .await;
    signal(
        &mut gw.client(WIJ).await,
        &clock,
        &mother,
        pb::Category::Finances,
        "WIJ",
    )
    .await;
    signal(
        &mut gw.client(VEILIG_THUIS).await,
        &clock,
        &child,
        pb::Category::Safety,
        "VT",
    )
    .await;
    // Only agencies the family's consent lets know of each other are reminded.
    consent(
        &mut gw.client(WIJ).await,
        &mother,
        &[pb::Role::Wij, pb::Role::VeiligThuis],
        &[CASE],
    )
    .await;
    clock.advance(time::Duration::days(8));
    // The first family was reminded 8 days ago (not due for 28); the second is due after 7.
    assert_eq!(
        signaalpoort_server::send_coordination_reminders(&gateway)
            .await
            .unwrap(),
        1
    );
    gw.stop().await;
}

async fn history_and_chronicity_over_two_years(backend: Backend) {
    let env = Env::new(backend).await;
    let clock = ManualClock::new(time::macros::datetime!(2024-01-15 10:00 UTC));
    let gw = env.start(&clock).await;
    let mut f = family(&gw, &clock, 780).await;
    let child = bsn(781);
    // WIJ coordinates.
    let p = f
        .wij
        .coordination
        .propose_coordinator(pb::ProposeCoordinatorRequest {
            case: case(&f.wij_sig),
            contact: team("WIJ"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .coordination
        .unwrap()
        .open_proposal
        .unwrap();
    for (c, sig) in [(&mut f.ggd, &f.ggd_sig), (&mut f.accare, &f.accare_sig)] {
        c.coordination
            .respond_to_proposal(pb::RespondToProposalRequest {
                case: case(sig),
                proposal_id: p.proposal_id.clone(),
                accept: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // 2024-Q3: Accare's involvement ends.
    clock.set(time::macros::datetime!(2024-08-15 10:00 UTC));
    f.accare
        .signals
        .withdraw_signal(pb::WithdrawSignalRequest {
            signal_id: f.accare_sig.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    // 2025-Q2: Veilig Thuis registers a safety signal on the child.
    clock.set(time::macros::datetime!(2025-05-15 10:00 UTC));
    let mut vt = gw.client(VEILIG_THUIS).await;
    let vt_sig = signal(&mut vt, &clock, &child, pb::Category::Safety, "VT triage").await;

    let history = f
        .wij
        .coordination
        .get_history(pb::GetHistoryRequest {
            case: case(&f.wij_sig),
        })
        .await
        .unwrap()
        .into_inner();
    // Hand-computed: (period, agencies, registered, ended).
    let got: Vec<(String, u32, u32, u32)> = history
        .periods
        .iter()
        .map(|p| {
            (
                p.period.clone(),
                p.distinct_agencies,
                p.signals_registered,
                p.signals_ended,
            )
        })
        .collect();
    let want: Vec<(String, u32, u32, u32)> = [
        ("2024-Q1", 3, 3, 0),
        ("2024-Q2", 3, 0, 0),
        ("2024-Q3", 3, 0, 1),
        ("2024-Q4", 2, 0, 0),
        ("2025-Q1", 2, 0, 0),
        // Veilig Thuis's safety signal is not counted for WIJ: the family's consent does not name
        // Veilig Thuis, and sensitive involvement is not shown on the consent basis.
        ("2025-Q2", 2, 0, 0),
    ]
    .iter()
    .map(|(p, a, r, e)| (p.to_string(), *a, *r, *e))
    .collect();
    assert_eq!(got, want);
    assert!(history
        .periods
        .iter()
        .all(|p| !p.categories.contains(&(pb::Category::Safety as i32))));
    // 2024-01-15 to 2025-05-15.
    assert_eq!(history.involvement_days, 486);
    // The ended signal is purged; its involvement stays in the history, as counts only.
    let gateway = gw.running.gateway.clone();
    let (purged, _) = signaalpoort_server::purge_expired(&gateway).await.unwrap();
    assert_eq!(purged, 1);
    assert!(gateway
        .store
        .read()
        .signal(&f.accare_sig)
        .await
        .unwrap()
        .is_none());
    let again = f
        .wij
        .coordination
        .get_history(pb::GetHistoryRequest {
            case: case(&f.wij_sig),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.periods, history.periods);

    let indicator = f
        .wij
        .coordination
        .get_chronicity(pb::GetChronicityRequest {
            case: case(&f.wij_sig),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(indicator.indicated);
    assert_eq!(
        indicator.triggered_by,
        ["2 or more agencies involved in 6 of the last 8 quarters (threshold: 5)"]
    );

    // Not the coordinator: denied, and logged.
    let before = gw.log_len().await;
    let denied = f
        .ggd
        .coordination
        .get_history(pb::GetHistoryRequest {
            case: case(&f.ggd_sig),
        })
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&denied), "NOT_COORDINATOR");
    assert_eq!(gw.log_len().await, before + 1);
    // Not involved at all: denied before anything is read, and logged.
    let mut gemeente = gw.client(GEMEENTE).await;
    let stranger = gemeente
        .coordination
        .get_chronicity(pb::GetChronicityRequest {
            case: case(&f.wij_sig),
        })
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&stranger), "NOT_INVOLVED");
    assert_eq!(gw.log_len().await, before + 2);
    // Veilig Thuis may read the history and the indicator on the safety basis, openly — and sees
    // its own safety signal counted.
    let vt_case = || {
        Some(pb::CaseRef {
            your_signal_id: vt_sig.clone(),
            purpose: pb::Purpose::ChildSafety as i32,
            safety_justification: "herhaalde melding, patroon beoordelen voor triage".into(),
        })
    };
    let vt_history = vt
        .coordination
        .get_history(pb::GetHistoryRequest { case: vt_case() })
        .await
        .unwrap()
        .into_inner();
    let last = vt_history.periods.last().unwrap();
    assert_eq!(
        (
            last.period.as_str(),
            last.distinct_agencies,
            last.signals_registered
        ),
        ("2025-Q2", 3, 1)
    );
    assert!(last.categories.contains(&(pb::Category::Safety as i32)));
    let vt_view = vt
        .coordination
        .get_chronicity(pb::GetChronicityRequest { case: vt_case() })
        .await
        .unwrap()
        .into_inner();
    assert!(vt_view.indicated);
    let record = gw
        .store()
        .read()
        .export_log(before + 4, before + 4, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(record.draft.action, "GetChronicity");
    assert!(record.draft.flagged_for_review);
    gw.stop().await;
}

both_backends!(
    propose_accept_decline_hand_over_step_down,
    a_coordinator_whose_signal_ends_lapses,
    reminders_follow_the_clock,
    history_and_chronicity_over_two_years,
);
