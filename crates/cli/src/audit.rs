//! `signaalpoort audit`: for security and privacy officers. Query, export, report over gRPC with an
//! auditor certificate; `verify` works offline on an export.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Subcommand};
use signaalpoort_api::v1 as pb;
use signaalpoort_core::access_log::{
    export_lines, verify_export_from, AccessRecord, ChainStart, SignedCheckpoint,
};
use tokio_stream::StreamExt;

use crate::client::{AgencyClient, ClientIdentity};

#[derive(Args, Debug, Clone)]
pub struct Connection {
    #[arg(
        long,
        default_value = "https://127.0.0.1:7443",
        env = "SIGNAALPOORT_ENDPOINT"
    )]
    pub endpoint: String,
    /// Directory with ca.pem and agencies/<slug>.pem|.key (the dev PKI layout).
    #[arg(long, default_value = "certs/dev")]
    pub pki: PathBuf,
    #[arg(long, default_value = "auditor")]
    pub identity: String,
    /// Your pseudonymous staff id; logged with every query.
    #[arg(long, env = "SIGNAALPOORT_ACTOR")]
    pub actor: String,
}

impl Connection {
    async fn client(&self) -> anyhow::Result<AgencyClient> {
        AgencyClient::connect(
            &self.endpoint,
            &ClientIdentity::dev(&self.pki, &self.identity),
            &self.actor,
        )
        .await
    }
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Query the access log; prints a table.
    Query {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        bsn: Option<String>,
        #[arg(long)]
        household: Option<String>,
        #[arg(long)]
        agency: Option<String>,
        #[arg(long)]
        actor_id: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        flagged: bool,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Export the whole log (JSON lines or CSV) plus the checkpoints and public key for `verify`.
    Export {
        #[command(flatten)]
        conn: Connection,
        /// Output file for the records.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
    },
    /// The citizen access report (AVG art. 15) for a BSN, in Dutch.
    Report {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        bsn: String,
        #[arg(long)]
        household: bool,
        #[arg(long)]
        html: bool,
    },
    /// Verify an export offline against signed checkpoints; names the first bad record.
    Verify {
        /// JSON-lines export.
        #[arg(long)]
        export: PathBuf,
        /// Checkpoints file written by `export` (one JSON object per line).
        #[arg(long)]
        checkpoints: PathBuf,
        /// Public key file written by `export` (base64 Ed25519), or the base64 itself.
        #[arg(long)]
        public_key: String,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ExportFormat {
    /// The verifiable export: one `{"record":…,"hash":…}` per line (input for `audit verify`).
    Jsonl,
    /// A spreadsheet-friendly table of the same records.
    Csv,
    /// Logboek Dataverwerkingen (Logius) entries, one per record and data subject, with trace and
    /// span ids, for joining to an agency's own processing log.
    Logboek,
}

pub async fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Query {
            conn,
            bsn,
            household,
            agency,
            actor_id,
            action,
            reason,
            flagged,
            limit,
        } => {
            let mut c = conn.client().await?;
            let resp = c
                .audit
                .query_access_log(pb::QueryAccessLogRequest {
                    bsn: bsn.unwrap_or_default(),
                    household_id: household.unwrap_or_default(),
                    agency_oin: agency.unwrap_or_default(),
                    actor_id: actor_id.unwrap_or_default(),
                    action: action.unwrap_or_default(),
                    reason: reason.unwrap_or_default(),
                    flagged_only: flagged,
                    page_size: limit,
                    ..Default::default()
                })
                .await?
                .into_inner();
            print_table(&resp.records);
        }
        AuditCommand::Export { conn, out, format } => {
            let mut c = conn.client().await?;
            let mut stream = c
                .audit
                .export_access_log(pb::ExportAccessLogRequest::default())
                .await?
                .into_inner();
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?,
            );
            if matches!(format, ExportFormat::Csv) {
                writeln!(file, "seq,time_unix_us,agency_oin,role,actor_id,action,subjects,household_id,purpose,basis,decision,reason,status_code,request_id,flagged,trace_id,span_id,object_id,prev_hash,hash")?;
            }
            let mut n = 0u64;
            while let Some(item) = stream.next().await {
                let line = item?.line;
                match format {
                    ExportFormat::Jsonl => writeln!(file, "{line}")?,
                    ExportFormat::Csv => {
                        let r = AccessRecord::from_export_line(&line)
                            .context("the gateway sent a malformed export line")?;
                        writeln!(file, "{}", csv_row(&r))?;
                    }
                    ExportFormat::Logboek => {
                        let r = AccessRecord::from_export_line(&line)
                            .context("the gateway sent a malformed export line")?;
                        for entry in signaalpoort_core::access_log::ldv::ldv_entries(
                            &r,
                            env!("CARGO_PKG_VERSION"),
                        ) {
                            writeln!(file, "{entry}")?;
                        }
                    }
                }
                n += 1;
            }
            file.flush()?;
            let cps = c
                .audit
                .list_checkpoints(pb::ListCheckpointsRequest { limit: 1000 })
                .await?
                .into_inner();
            let cp_path = out.with_extension("checkpoints.jsonl");
            let mut cp_file = std::fs::File::create(&cp_path)?;
            for cp in &cps.checkpoints {
                writeln!(
                    cp_file,
                    "{}",
                    serde_json::json!({"note": cp.note, "signature": cp.signature})
                )?;
            }
            let key = c
                .audit
                .get_public_key(pb::GetPublicKeyRequest {})
                .await?
                .into_inner();
            let key_path = out.with_extension("pubkey");
            std::fs::write(&key_path, format!("{}\n", key.ed25519_public_key))?;
            println!("exported {n} records to {}", out.display());
            println!(
                "checkpoints: {} ({} signed)",
                cp_path.display(),
                cps.checkpoints.len()
            );
            println!(
                "public key:  {} (key id {})",
                key_path.display(),
                key.key_id
            );
            println!("verify with: signaalpoort audit verify --export {} --checkpoints {} --public-key {}", out.display(), cp_path.display(), key_path.display());
        }
        AuditCommand::Report {
            conn,
            bsn,
            household,
            html,
        } => {
            let mut c = conn.client().await?;
            let resp = c
                .audit
                .citizen_report(pb::CitizenReportRequest {
                    bsn,
                    include_household: household,
                    format: if html {
                        pb::ReportFormat::Html
                    } else {
                        pb::ReportFormat::Text
                    } as i32,
                    ..Default::default()
                })
                .await?
                .into_inner();
            print!("{}", resp.content);
        }
        AuditCommand::Verify {
            export,
            checkpoints,
            public_key,
        } => return verify(&export, &checkpoints, &public_key),
    }
    Ok(ExitCode::SUCCESS)
}

/// Offline verification; exit code 0 only when everything checks out.
pub fn verify(
    export: &std::path::Path,
    checkpoints: &std::path::Path,
    public_key: &str,
) -> anyhow::Result<ExitCode> {
    let key_text = if std::path::Path::new(public_key).exists() {
        std::fs::read_to_string(public_key)?
    } else {
        public_key.to_owned()
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_text.trim())
        .context("public key must be base64 (as written by `audit export`)")?;
    let mut cps = Vec::new();
    for (i, line) in std::fs::read_to_string(checkpoints)?.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        cps.push(SignedCheckpoint::from_json(line).with_context(|| {
            format!(
                "{} line {}: malformed checkpoint",
                checkpoints.display(),
                i + 1
            )
        })?);
    }
    let data = std::fs::read(export).with_context(|| format!("reading {}", export.display()))?;
    let started = Instant::now();
    // After retention an export starts later than record 1; it is then verified from there on,
    // authenticated by the signed checkpoints after that point. Said out loud below.
    let report = verify_export_from(export_lines(&data), &cps, &key, ChainStart::FirstLine);
    let first_seq = export_lines(&data)
        .find(|l| !l.is_empty())
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(AccessRecord::from_export_line)
        .map_or(1, |r| r.seq);
    let elapsed = started.elapsed();
    let rate = report.records as f64 / elapsed.as_secs_f64().max(1e-9);
    match &report.first_problem {
        None => {
            if first_seq > 1 {
                println!(
                    "note: the export starts at record {first_seq}; records before it were removed by retention (or cut off)"
                );
            }
            println!(
                "OK: {} records, chain intact, {} signed checkpoint(s) verified; head {}",
                report.records,
                report.checkpoints_checked,
                hex::encode(report.head_hash)
            );
            println!(
                "verified in {:.3} s ({:.0} records/s, {:.1} MB/s)",
                elapsed.as_secs_f64(),
                rate,
                data.len() as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(problem) => {
            println!("FAILED: {problem}");
            if let Some(line) = data
                .split(|b| *b == b'\n')
                .nth(problem.line.saturating_sub(1) as usize)
            {
                if let Some(r) = AccessRecord::from_export_line(&String::from_utf8_lossy(line)) {
                    println!(
                        "first bad record: seq {} at {} by {} ({})",
                        r.seq, r.draft.time, r.draft.agency_oin, r.draft.action
                    );
                }
            }
            println!("{} record(s) before it verified.", report.records);
            Ok(ExitCode::from(2))
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn csv_row(r: &AccessRecord) -> String {
    let d = &r.draft;
    [
        r.seq.to_string(),
        (d.time.unix_timestamp_nanos() / 1000).to_string(),
        d.agency_oin.clone(),
        d.role.map(|x| x.code().to_owned()).unwrap_or_default(),
        d.actor_id.clone(),
        d.action.clone(),
        d.subjects.join(" "),
        d.household_id.clone(),
        d.purpose.map(|x| x.code().to_owned()).unwrap_or_default(),
        d.basis.map(|x| x.code().to_owned()).unwrap_or_default(),
        d.decision.code().to_owned(),
        d.reason.clone(),
        d.status_code.to_string(),
        d.request_id.clone(),
        d.flagged_for_review.to_string(),
        d.trace_id.clone(),
        d.span_id.clone(),
        d.object_id.clone(),
        hex::encode(r.prev_hash),
        hex::encode(r.hash),
    ]
    .iter()
    .map(|f| csv_field(f))
    .collect::<Vec<_>>()
    .join(",")
}

fn print_table(records: &[pb::AccessRecord]) {
    println!(
        "{:>7}  {:<20}  {:<20}  {:<14}  {:<20}  {:<6}  {:<26}  flag",
        "seq", "time (UTC)", "agency", "actor", "action", "result", "reason"
    );
    for r in records {
        let time = r
            .time
            .as_ref()
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.seconds).ok())
            .map(|t| {
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            })
            .unwrap_or_default();
        let result = if r.decision == pb::Decision::Allow as i32 {
            "allow"
        } else {
            "deny"
        };
        println!(
            "{:>7}  {:<20}  {:<20}  {:<14}  {:<20}  {:<6}  {:<26}  {}",
            r.seq,
            time,
            r.agency_oin,
            truncate(&r.actor_id, 14),
            truncate(&r.action, 20),
            result,
            truncate(&r.reason, 26),
            if r.flagged_for_review { "REVIEW" } else { "" }
        );
    }
    println!("({} records)", records.len());
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}
