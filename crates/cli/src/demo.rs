//! The demo: the situation of the 2015 council letter, replayed. Several agencies are involved with
//! one family without knowing of each other; the gateway matches their signals, and — once the
//! family consents, or when a child's safety demands it — each learns who else is involved and how
//! to reach them. Every step is in the access log, which the auditor checks at the end.

use std::path::PathBuf;

use anyhow::Context;
use signaalpoort_api::v1 as pb;
use signaalpoort_core::complete_bsn;
use tonic::Code;
use tonic_types::StatusExt;

use crate::client::{AgencyClient, ClientIdentity};

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    #[arg(long, default_value = "https://127.0.0.1:7443")]
    pub endpoint: String,
    #[arg(long, default_value = "certs/dev")]
    pub pki: PathBuf,
}

struct Family {
    mother: String,
    father: String,
    daughter: String,
    son: String,
}

fn family() -> anyhow::Result<Family> {
    let bsn = |p: &str| complete_bsn(p).context("demo BSN prefix has no check digit");
    Ok(Family {
        mother: bsn("10000001")?,
        father: bsn("10000002")?,
        daughter: bsn("10000003")?,
        son: bsn("10000004")?,
    })
}

fn contact(team: &str, phone: &str) -> Option<pb::ContactPoint> {
    Some(pb::ContactPoint {
        team: team.to_owned(),
        phone: phone.to_owned(),
        email: String::new(),
    })
}

fn step(n: u32, text: &str) {
    println!("\n{n}. {text}");
}

fn say(text: impl AsRef<str>) {
    println!("   {}", text.as_ref());
}

fn involvement_line(i: &pb::Involvement) -> String {
    let agency = i.agency.clone().unwrap_or_default();
    let contact = i.contact.clone().unwrap_or_default();
    let category = pb::Category::try_from(i.category)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("CATEGORY_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let level = if i.level == pb::MatchLevel::Household as i32 {
        "another member of the household"
    } else {
        "the same child"
    };
    if i.withheld {
        format!(
            "- {} (details withheld for safety) on {level}; contact {} {}",
            agency.name, contact.team, contact.phone
        )
    } else {
        format!(
            "- {} ({category}) on {level}; contact {} {}",
            agency.name, contact.team, contact.phone
        )
    }
}

fn denial(status: &tonic::Status) -> String {
    let reason = status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default();
    format!("{:?} {reason}: {}", status.code(), status.message())
}

async fn agency(args: &DemoArgs, slug: &str, actor: &str) -> anyhow::Result<AgencyClient> {
    AgencyClient::connect(&args.endpoint, &ClientIdentity::dev(&args.pki, slug), actor).await
}

pub async fn run_against(args: &DemoArgs) -> anyhow::Result<()> {
    let f = family()?;
    let gemeente = agency(args, "gemeente-groningen", "gem-bv-017").await?;
    let mut wij = agency(args, "wij-groningen", "wij-oost-042").await?;
    let mut ggd = agency(args, "ggd-groningen", "ggd-jgz-008").await?;
    let mut vt = agency(args, "veilig-thuis-groningen", "vt-triage-003").await?;
    let mut accare = agency(args, "jeugdhulp-accare", "accare-11").await?;
    let mut auditor = agency(args, "auditor", "fg-001").await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let run = &run[..8];

    println!("DEMO — one family, several agencies (Groningen, after the 2015 action plan)");
    println!(
        "A mother, a father, a daughter of 7 and a son of 14. Each agency knows only its own part."
    );

    step(
        1,
        "Three agencies register what they know — a signal each, no case file, no free text.",
    );
    let ggd_signal = ggd
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: f.daughter.clone(),
            category: pb::Category::Health as i32,
            contact: contact("JGZ Oosterpark", "050 367 4000"),
            request_id: format!("demo-{run}-ggd"),
            ..Default::default()
        })
        .await?
        .into_inner();
    say("GGD (youth health care) registers a health signal on the daughter.");
    let wij_signal = wij
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: f.mother.clone(),
            category: pb::Category::Finances as i32,
            contact: contact("WIJ-team Oosterpark", "050 367 5000"),
            ..Default::default()
        })
        .await?
        .into_inner();
    say("WIJ (social team) registers a finances signal on the mother.");
    accare
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: f.son.clone(),
            category: pb::Category::MentalHealth as i32,
            contact: contact("Accare Groningen-Stad", "050 368 1000"),
            ..Default::default()
        })
        .await?;
    say("Accare (youth care) registers a mental-health signal on the son.");
    say("Nobody learns anything from registering: the answer is the agency's own signal, whether or not others are involved.");

    step(
        2,
        "The municipality declares the household from the BRP, with birth dates: signals on any member match, and ages decide who may consent.",
    );
    let today = time::OffsetDateTime::now_utc().date() - time::Duration::days(40);
    let born = |years: i32| {
        format!(
            "{:04}-{:02}-{:02}",
            today.year() - years,
            u8::from(today.month()),
            today.day().min(28)
        )
    };
    let mut gemeente_households = gemeente.households.clone();
    let hh = gemeente_households
        .declare_household(pb::DeclareHouseholdRequest {
            household_ref: format!("demo-{run}"),
            members: [
                (&f.mother, 37),
                (&f.father, 39),
                (&f.daughter, 7),
                (&f.son, 14),
            ]
            .iter()
            .map(|(b, years)| pb::HouseholdMember {
                bsn: (*b).clone(),
                birth_date: born(*years),
                ..Default::default()
            })
            .collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    say(format!(
        "Household declared with {} members; the gateway now sees three agencies on one family.",
        hh.member_count
    ));

    let wij_signal_id = wij_signal.signal.map(|s| s.signal_id).unwrap_or_default();
    step(
        3,
        "WIJ asks who else is involved — but the family has not consented to any exchange yet.",
    );
    match wij
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: wij_signal_id.clone(),
            purpose: pb::Purpose::CareCoordination as i32,
            ..Default::default()
        })
        .await
    {
        Ok(_) => say("unexpected: answered without consent"),
        Err(s) if s.code() == Code::PermissionDenied => {
            say(format!("Refused, and logged: {}", denial(&s)))
        }
        Err(s) => return Err(s.into()),
    }

    step(
        4,
        "The WIJ worker talks with the mother; she consents for herself and, as parent, for the household.",
    );
    let consent = wij
        .consents
        .record_consent(pb::RecordConsentRequest {
            bsn: f.mother.clone(),
            include_household: true,
            givers: vec![
                pb::ConsentGiver::Subject as i32,
                pb::ConsentGiver::ParentOrGuardian as i32,
            ],
            purposes: vec![
                pb::Purpose::CareCoordination as i32,
                pb::Purpose::CaseCoordination as i32,
            ],
            roles: vec![
                pb::Role::Wij as i32,
                pb::Role::Ggd as i32,
                pb::Role::Jeugdhulp as i32,
            ],
            valid_until: Some(prost_types::Timestamp {
                seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 365 * 86400,
                nanos: 0,
            }),
            evidence_ref: format!("WIJ-dossier-{run}/toestemming-1"),
            ..Default::default()
        })
        .await?
        .into_inner();
    say(format!(
        "Consent recorded (id {}), naming WIJ, GGD and youth care. It covers the mother and the daughter of 7 (a parent speaks for a child under 12) — not the son of 14, who must consent himself, nor the father.",
        consent.consent.map(|c| c.consent_id).unwrap_or_default()
    ));
    let refused_child = accare
        .consents
        .record_consent(pb::RecordConsentRequest {
            bsn: f.son.clone(),
            givers: vec![pb::ConsentGiver::ParentOrGuardian as i32],
            purposes: vec![pb::Purpose::CareCoordination as i32],
            roles: vec![pb::Role::Wij as i32],
            valid_until: Some(prost_types::Timestamp {
                seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 180 * 86400,
                nanos: 0,
            }),
            evidence_ref: format!("Accare-dossier-{run}/toestemming-2"),
            ..Default::default()
        })
        .await;
    if let Err(s) = refused_child {
        say(format!(
            "Accare tries to record a consent for the 14-year-old from a parent alone; refused: {}",
            denial(&s)
        ));
    }
    accare
        .consents
        .record_consent(pb::RecordConsentRequest {
            bsn: f.son.clone(),
            givers: vec![
                pb::ConsentGiver::Subject as i32,
                pb::ConsentGiver::ParentOrGuardian as i32,
            ],
            purposes: vec![pb::Purpose::CareCoordination as i32],
            roles: vec![
                pb::Role::Wij as i32,
                pb::Role::Ggd as i32,
                pb::Role::Jeugdhulp as i32,
            ],
            valid_until: Some(prost_types::Timestamp {
                seconds: time::OffsetDateTime::now_utc().unix_timestamp() + 180 * 86400,
                nanos: 0,
            }),
            evidence_ref: format!("Accare-dossier-{run}/toestemming-3"),
            ..Default::default()
        })
        .await?;
    say("The son and his mother then consent together; Accare records it.");

    step(
        5,
        "WIJ asks again. Now it learns who else is involved with each person the consents cover, and how to reach them — nothing more.",
    );
    let answer = wij
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: wij_signal_id.clone(),
            purpose: pb::Purpose::CareCoordination as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    for i in &answer.involvements {
        say(involvement_line(i));
    }

    step(
        6,
        "Veilig Thuis receives a report about the daughter and registers a safety signal.",
    );
    let vt_signal = vt
        .signals
        .register_signal(pb::RegisterSignalRequest {
            bsn: f.daughter.clone(),
            category: pb::Category::Safety as i32,
            contact: contact("Veilig Thuis Groningen, team triage", "0800 2000"),
            ..Default::default()
        })
        .await?
        .into_inner();
    say("Without consent, Veilig Thuis may act on the safety basis — openly, with a written justification:");
    let vt_answer = vt
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: vt_signal.signal.map(|s| s.signal_id).unwrap_or_default(),
            purpose: pb::Purpose::ChildSafety as i32,
            safety_justification: "Melding acute onveiligheid dochter; meldcode stap 5, afstemming met betrokken hulpverleners nodig".into(),
        })
        .await?
        .into_inner();
    for i in &vt_answer.involvements {
        say(involvement_line(i));
    }
    say("This use of the safety basis is flagged for review and alerted to the auditor.");

    step(7, "GGD asks who is involved with the daughter. The family's consent does not name Veilig Thuis, so GGD does not see it:");
    let ggd_view = ggd
        .signals
        .query_involvement(pb::QueryInvolvementRequest {
            signal_id: ggd_signal.signal.map(|s| s.signal_id).unwrap_or_default(),
            purpose: pb::Purpose::CareCoordination as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    for i in &ggd_view.involvements {
        say(involvement_line(i));
    }

    step(
        8,
        "The back-ends that poll for news receive their match notifications.",
    );
    let notes = accare
        .notifications
        .list_notifications(pb::ListNotificationsRequest {
            purpose: pb::Purpose::CareCoordination as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    say(format!(
        "Accare receives {} notification(s) about others involved with the family.",
        notes.notifications.len()
    ));

    step(9, "The privacy officer checks the log: alerts, the chain, and what the family may ask to see.");
    let log = auditor
        .audit
        .query_access_log(pb::QueryAccessLogRequest {
            flagged_only: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    say(format!(
        "{} call(s) on the safety basis flagged for review.",
        log.records.len()
    ));
    let report = auditor
        .audit
        .citizen_report(pb::CitizenReportRequest {
            bsn: f.daughter.clone(),
            include_household: false,
            format: pb::ReportFormat::Text as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    say(format!(
        "Citizen access report for the daughter ({} entries):",
        report.entry_count
    ));
    for line in report.content.lines() {
        say(format!("   {line}"));
    }
    println!("\nDemo complete. Every call above — allowed or refused — is one record in the hash-chained access log.");
    Ok(())
}
