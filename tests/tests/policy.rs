//! Consent and purpose-bound policy, end to end: the main paths over mutual TLS on both backends.
//! (The whole role × action × purpose × consent matrix is tested on the pure policy in core.)

use signaalpoort_api::v1 as pb;
use signaalpoort_server::ManualClock;
use signaalpoort_tests::*;
use tokio_stream::StreamExt;
use tonic::Code;

const CARE: pb::Purpose = pb::Purpose::CareCoordination;
const SAFETY: pb::Purpose = pb::Purpose::ChildSafety;

fn clock() -> ManualClock {
    ManualClock::new(time::OffsetDateTime::now_utc())
}

/// WIJ and GGD both involved with one child; returns (wij signal id, ggd signal id).
async fn involved_pair(gw: &Gateway, child: &str) -> (String, String) {
    let mut wij = gw.client(WIJ).await;
    let mut ggd = gw.client(GGD).await;
    let a = register(&mut wij, child, pb::Category::Parenting)
        .await
        .signal_id;
    let b = register(&mut ggd, child, pb::Category::Health)
        .await
        .signal_id;
    (a, b)
}

async fn without_consent_nothing_is_disclosed(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let child = bsn(101);
    let (wij_sig, _) = involved_pair(&gw, &child).await;
    let mut wij = gw.client(WIJ).await;
    let status = involvement(&mut wij, &wij_sig, CARE).await.unwrap_err();
    assert_eq!(deny_reason(&status), "CONSENT_MISSING");
    // Notifications exist, but none is delivered without a basis.
    let polled = wij
        .notifications
        .list_notifications(pb::ListNotificationsRequest {
            purpose: CARE as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(polled.notifications.is_empty());
    // Nothing undeliverable is visible: the cursor moves only with deliveries.
    assert_eq!(
        polled.cursor, 0,
        "a cursor that moved would say that someone became involved"
    );
    gw.stop().await;
}

async fn not_involved_is_denied_before_anything_is_read(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let child = bsn(102);
    let (_, ggd_sig) = involved_pair(&gw, &child).await;
    let mut accare = gw.client(JEUGDHULP).await;
    // Asking about another agency's signal looks exactly like asking about a signal that does not exist.
    let a = involvement(&mut accare, &ggd_sig, CARE).await.unwrap_err();
    let b = involvement(&mut accare, "00000000-0000-0000-0000-000000000000", CARE)
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&a), "NOT_INVOLVED");
    assert_eq!(deny_reason(&b), "NOT_INVOLVED");
    assert_eq!(a.message(), b.message());
    gw.stop().await;
}

async fn consent_states_name_the_missing_basis(backend: Backend) {
    let env = Env::new(backend).await;
    let clock = clock();
    let gw = env.start(&clock).await;
    let child = bsn(103);
    let (wij_sig, _) = involved_pair(&gw, &child).await;
    let mut wij = gw.client(WIJ).await;

    // Wrong purpose.
    consent(
        &mut wij,
        &child,
        &[pb::Role::Wij, pb::Role::Ggd],
        &[pb::Purpose::CaseCoordination],
    )
    .await;
    assert_eq!(
        deny_reason(&involvement(&mut wij, &wij_sig, CARE).await.unwrap_err()),
        "CONSENT_WRONG_PURPOSE"
    );
    // A consent naming only WIJ lets WIJ ask, but discloses no agency it does not name.
    let only_wij = consent(&mut wij, &child, &[pb::Role::Wij], &[CARE]).await;
    let answer = involvement(&mut wij, &wij_sig, CARE).await.unwrap();
    assert!(answer.involvements.is_empty());
    assert_eq!(answer.consent_id, only_wij.consent_id);
    // Withdrawn.
    wij.consents
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: only_wij.consent_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let both = consent(&mut wij, &child, &[pb::Role::Wij, pb::Role::Ggd], &[CARE]).await;
    assert_eq!(
        names(&involvement(&mut wij, &wij_sig, CARE).await.unwrap()),
        ["GGD Groningen"]
    );
    wij.consents
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: both.consent_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        deny_reason(&involvement(&mut wij, &wij_sig, CARE).await.unwrap_err()),
        "CONSENT_WITHDRAWN"
    );
    // Expired: evaluated at decision time.
    consent(&mut wij, &child, &[pb::Role::Wij, pb::Role::Ggd], &[CARE]).await;
    assert!(involvement(&mut wij, &wij_sig, CARE).await.is_ok());
    clock.advance(time::Duration::days(181));
    // The signals live a year by default, the consent 180 days.
    assert_eq!(
        deny_reason(&involvement(&mut wij, &wij_sig, CARE).await.unwrap_err()),
        "CONSENT_EXPIRED"
    );
    gw.stop().await;
}

async fn age_rules_are_enforced(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let child = bsn(104);
    let mut wij = gw.client(WIJ).await;
    register(&mut wij, &child, pb::Category::Parenting).await;
    let today = time::OffsetDateTime::now_utc().date();
    let born = |years: i32| {
        format!(
            "{:04}-{:02}-{:02}",
            today.year() - years,
            u8::from(today.month()),
            today.day().min(28)
        )
    };
    let attempt = |givers: Vec<pb::ConsentGiver>| pb::RecordConsentRequest {
        bsn: child.clone(),
        givers: givers.into_iter().map(|g| g as i32).collect(),
        purposes: vec![CARE as i32],
        roles: vec![pb::Role::Wij as i32],
        valid_until: future(30),
        evidence_ref: "doc-7".into(),
        ..Default::default()
    };
    // The age comes from the municipality's declaration only; re-declaring changes it.
    let mut gemeente = gw.client(GEMEENTE).await;
    let declare_born = |birth: String| pb::DeclareHouseholdRequest {
        household_ref: "hh-104".into(),
        members: vec![pb::HouseholdMember {
            bsn: child.clone(),
            birth_date: birth,
            ..Default::default()
        }],
        ..Default::default()
    };
    use pb::ConsentGiver::{ParentOrGuardian as Parent, Subject};
    // No birth date declared: the strictest rule, both givers.
    let unknown = wij
        .consents
        .record_consent(attempt(vec![Subject]))
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&unknown), "AGE_RULE_NOT_MET");
    assert!(
        unknown.message().contains("strictest"),
        "{}",
        unknown.message()
    );
    let cases = [
        (8, vec![Subject], false, "parent or guardian"),
        (8, vec![Parent], true, ""),
        (13, vec![Parent], false, "both"),
        (13, vec![Subject, Parent], true, ""),
        (17, vec![Parent], false, "alone"),
        (17, vec![Subject], true, ""),
    ];
    for (age, givers, ok, why) in cases {
        gemeente
            .households
            .declare_household(declare_born(born(age)))
            .await
            .unwrap();
        let result = wij.consents.record_consent(attempt(givers.clone())).await;
        match (ok, result) {
            (true, Ok(_)) => {}
            (false, Err(status)) => {
                assert_eq!(
                    deny_reason(&status),
                    "AGE_RULE_NOT_MET",
                    "age {age} {givers:?}"
                );
                assert!(
                    status.message().contains(why),
                    "age {age}: {}",
                    status.message()
                );
            }
            (ok, r) => panic!("age {age} {givers:?}: expected ok={ok}, got {r:?}"),
        }
    }
    // A consent for a child who turns 12 within its validity is flagged for renewal on that day.
    let soon_twelve = today + time::Duration::days(10);
    let birth = format!(
        "{:04}-{:02}-{:02}",
        soon_twelve.year() - 12,
        u8::from(soon_twelve.month()),
        soon_twelve.day().min(28)
    );
    gemeente
        .households
        .declare_household(declare_born(birth))
        .await
        .unwrap();
    let c = wij
        .consents
        .record_consent(attempt(vec![Parent]))
        .await
        .unwrap()
        .into_inner()
        .consent
        .unwrap();
    assert!(
        c.renew_by.is_some(),
        "renewal date set when the age regime changes"
    );
    gw.stop().await;
}

async fn safety_basis_needs_justification_and_is_flagged_and_alerted(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let child = bsn(105);
    let (_, _) = involved_pair(&gw, &child).await;
    let mut vt = gw.client(VEILIG_THUIS).await;
    let vt_sig = register(&mut vt, &child, pb::Category::Safety)
        .await
        .signal_id;
    let mut auditor = gw.client(AUDITOR).await;
    let mut alerts = auditor
        .audit
        .watch_alerts(pb::WatchAlertsRequest::default())
        .await
        .unwrap()
        .into_inner();

    let refused = vt
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: vt_sig.clone(),
            purpose: SAFETY as i32,
            safety_justification: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&refused), "JUSTIFICATION_REQUIRED");
    let short = vt
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: vt_sig.clone(),
            purpose: SAFETY as i32,
            safety_justification: "te kort".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&short), ["safety_justification"]);
    let justification = "Acute onveiligheid gemeld door school; meldcode stap 5";
    let answer = vt
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: vt_sig.clone(),
            purpose: SAFETY as i32,
            safety_justification: justification.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.basis, pb::Basis::Safety as i32);
    assert_eq!(names(&answer), ["GGD Groningen", "WIJ Groningen"]);

    let alert = loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(20), alerts.next())
            .await
            .expect("alert in time")
            .unwrap()
            .unwrap();
        if let Some(a) = msg.alert {
            break a;
        }
    };
    assert_eq!(alert.kind, pb::AlertKind::SafetyBasisUsed as i32);
    let flagged = auditor
        .audit
        .query_access_log(pb::QueryAccessLogRequest {
            flagged_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(flagged.records.len(), 1);
    assert_eq!(flagged.records[0].seq, alert.record_seq);
    assert_eq!(flagged.records[0].justification, justification);
    assert_eq!(flagged.records[0].basis, pb::Basis::Safety as i32);
    // Roles the table does not give the safety basis are refused for that purpose.
    let mut gemeente = gw.client(GEMEENTE).await;
    let g_sig = register(&mut gemeente, &child, pb::Category::Finances)
        .await
        .signal_id;
    let status = gemeente
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: g_sig,
            purpose: SAFETY as i32,
            safety_justification: justification.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&status), "PURPOSE_NOT_ALLOWED");
    gw.stop().await;
}

async fn sensitive_involvement_is_withheld_from_care_roles(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let child = bsn(106);
    let (_, ggd_sig) = involved_pair(&gw, &child).await;
    let mut vt = gw.client(VEILIG_THUIS).await;
    register(&mut vt, &child, pb::Category::Safety).await;
    let mut ggd = gw.client(GGD).await;
    consent(
        &mut ggd,
        &child,
        &[pb::Role::Wij, pb::Role::Ggd, pb::Role::VeiligThuis],
        &[CARE],
    )
    .await;
    let answer = involvement(&mut ggd, &ggd_sig, CARE).await.unwrap();
    let vt_view = answer
        .involvements
        .iter()
        .find(|i| i.withheld)
        .expect("VT involvement shown withheld");
    assert_eq!(
        vt_view.agency.as_ref().unwrap().name,
        "een betrokken professional"
    );
    assert_eq!(
        vt_view.agency.as_ref().unwrap().role,
        pb::Role::Unspecified as i32
    );
    assert_eq!(vt_view.category, pb::Category::Unspecified as i32);
    assert_eq!(vt_view.contact.as_ref().unwrap().team, "Team");
    gw.stop().await;
}

async fn withdrawal_takes_effect_on_an_open_stream(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let child = bsn(107);
    let mut wij = gw.client(WIJ).await;
    register(&mut wij, &child, pb::Category::Parenting).await;
    let c = consent(
        &mut wij,
        &child,
        &[pb::Role::Wij, pb::Role::Ggd, pb::Role::Jeugdhulp],
        &[CARE],
    )
    .await;
    let mut stream = wij
        .notifications
        .watch_notifications(pb::WatchNotificationsRequest {
            purpose: CARE as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    register(&mut gw.client(GGD).await, &child, pb::Category::Health).await;
    let first = loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(n) = m.notification {
            break n;
        }
    };
    assert_eq!(first.other.unwrap().agency.unwrap().name, "GGD Groningen");
    // The family withdraws (through GGD, on their behalf); then youth care becomes involved.
    let mut ggd = gw.client(GGD).await;
    ggd.consents
        .withdraw_consent(pb::WithdrawConsentRequest {
            consent_id: c.consent_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    register(
        &mut gw.client(JEUGDHULP).await,
        &child,
        pb::Category::YouthCare,
    )
    .await;
    // A marker the stream must reach: a new consent and a fresh involvement after it.
    consent(
        &mut wij,
        &child,
        &[pb::Role::Wij, pb::Role::Gemeente],
        &[CARE],
    )
    .await;
    register(
        &mut gw.client(GEMEENTE).await,
        &child,
        pb::Category::Finances,
    )
    .await;
    let next = loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(20), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(n) = m.notification {
            break n;
        }
    };
    // Youth care's involvement, notified while no consent covered it, was never delivered.
    assert_eq!(
        next.other.unwrap().agency.unwrap().name,
        "Gemeente Groningen"
    );
    gw.stop().await;
}

async fn auditors_only_for_the_log_and_auditors_see_no_signals(backend: Backend) {
    let env = Env::new(backend).await;
    let gw = env.start(&clock()).await;
    let mut wij = gw.client(WIJ).await;
    let status = wij
        .audit
        .query_access_log(pb::QueryAccessLogRequest::default())
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&status), "ROLE_NOT_PERMITTED");
    let mut auditor = gw.client(AUDITOR).await;
    let status = auditor
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: bsn(108),
            category: 1,
            contact: contact("T"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&status), "ROLE_NOT_PERMITTED");
    let mut gem = gw.client(GEMEENTE).await;
    assert!(gem
        .households
        .declare_household(pb::DeclareHouseholdRequest {
            household_ref: "h".into(),
            members: vec![],
            ..Default::default()
        })
        .await
        .is_err());
    let status = wij
        .households
        .declare_household(pb::DeclareHouseholdRequest {
            household_ref: "h".into(),
            members: vec![
                pb::HouseholdMember {
                    bsn: bsn(1),
                    ..Default::default()
                },
                pb::HouseholdMember {
                    bsn: bsn(2),
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(deny_reason(&status), "ROLE_NOT_PERMITTED");
    assert_eq!(status.code(), Code::PermissionDenied);
    gw.stop().await;
}

both_backends!(
    without_consent_nothing_is_disclosed,
    not_involved_is_denied_before_anything_is_read,
    consent_states_name_the_missing_basis,
    age_rules_are_enforced,
    safety_basis_needs_justification_and_is_flagged_and_alerted,
    sensitive_involvement_is_withheld_from_care_roles,
    withdrawal_takes_effect_on_an_open_stream,
    auditors_only_for_the_log_and_auditors_see_no_signals,
);
