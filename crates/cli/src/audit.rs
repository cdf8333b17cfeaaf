//! `signaalpoort audit`: for security and privacy officers. Query, export, report over gRPC with an
//! auditor certificate; `verify` works offline on an export.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use signaalpoort_api::v1 as pb;
use signaalpoort_core::access_log::{
    export_lines, verify_export, AccessRecord, ChainStart, SignedCheckpoint, TrustPolicy,
    VerifyInput, VerifyReport, WitnessKey,
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
    /// Verify the access log — an export offline, or a live database read-only — against signed,
    /// witnessed checkpoints; names the first bad record. Exit 0: intact and covered by
    /// checkpoints; 2: tampering found; 3: intact, but records after the newest accepted
    /// checkpoint are not yet covered (the count is printed).
    Verify(VerifyArgs),
}

#[derive(Args, Debug, Clone, Default)]
pub struct VerifyArgs {
    /// JSON-lines export (from `audit export`).
    #[arg(
        long,
        conflicts_with = "database",
        required_unless_present = "database"
    )]
    pub export: Option<PathBuf>,
    /// Checkpoints file written by `export` (one `{"note": …}` per line).
    #[arg(long, requires = "export")]
    pub checkpoints: Option<PathBuf>,
    /// Verify a live database instead (sqlite://PATH or postgres://…), read-only.
    #[arg(long)]
    pub database: Option<String>,
    /// The log's verifier key (`origin+id+base64`), or a file holding it. Take it from your own
    /// configuration, not from beside the export: a key shipped with the data proves nothing.
    #[arg(long, alias = "public-key")]
    pub log_key: String,
    /// A witness's verifier key (`name+id+base64`), or a file with one per line; repeatable.
    #[arg(long = "witness")]
    pub witnesses: Vec<String>,
    /// How many of the witnesses must have cosigned a checkpoint for it to count (default: all
    /// given, at least 1 when any is given).
    #[arg(long)]
    pub quorum: Option<usize>,
    /// A checkpoint a witness holds as its latest (its state file, a signed note): the log must
    /// reach it, with the same tree.
    #[arg(long)]
    pub trusted: Option<PathBuf>,
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
                writeln!(cp_file, "{}", serde_json::json!({ "note": cp.note }))?;
            }
            let key = c
                .audit
                .get_public_key(pb::GetPublicKeyRequest {})
                .await?
                .into_inner();
            let key_path = out.with_extension("pubkey");
            std::fs::write(&key_path, format!("{}\n", key.verifier_key))?;
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
            println!("verify with: signaalpoort audit verify --export {} --checkpoints {} --log-key <the log key from your own configuration> --witness <each witness key>", out.display(), cp_path.display());
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
        AuditCommand::Verify(args) => return verify(&args).await,
    }
    Ok(ExitCode::SUCCESS)
}

fn key_text(arg: &str) -> anyhow::Result<String> {
    Ok(if std::path::Path::new(arg).exists() {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_owned()
    })
}

/// The trust policy from the officer's own keys.
pub fn policy(args: &VerifyArgs) -> anyhow::Result<TrustPolicy> {
    let log_key = key_text(&args.log_key)?.trim().to_owned();
    let mut witnesses = Vec::new();
    for w in &args.witnesses {
        for line in key_text(w)?.lines().filter(|l| !l.trim().is_empty()) {
            witnesses.push(WitnessKey::parse(line)?);
        }
    }
    let quorum = args.quorum.unwrap_or(witnesses.len());
    anyhow::ensure!(
        quorum <= witnesses.len(),
        "--quorum {quorum} is more than the {} witness key(s) given",
        witnesses.len()
    );
    anyhow::ensure!(
        witnesses.is_empty() || quorum > 0,
        "--quorum 0 with witnesses given would ignore them"
    );
    let policy = TrustPolicy {
        log_key,
        witnesses,
        quorum,
    };
    policy.log_verifier().context("--log-key")?;
    Ok(policy)
}

/// Reads a checkpoints file: JSON lines `{"note": "<signed note>"}` (as `export` writes).
pub fn read_checkpoints(path: &std::path::Path) -> anyhow::Result<Vec<SignedCheckpoint>> {
    let mut cps = Vec::new();
    for (i, line) in std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .enumerate()
    {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("{} line {}: malformed checkpoint", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(bad)?;
        let note = v["note"].as_str().with_context(bad)?;
        cps.push(SignedCheckpoint::parse(note.as_bytes()).with_context(bad)?);
    }
    Ok(cps)
}

/// `audit verify`: exit 0 only when intact and covered; 2 on tampering; 3 when records are
/// not yet covered by an accepted checkpoint.
pub async fn verify(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let policy = policy(args)?;
    let trusted = match &args.trusted {
        Some(path) => Some(
            SignedCheckpoint::parse(&std::fs::read(path)?)
                .with_context(|| format!("{}: not a signed checkpoint", path.display()))?,
        ),
        None => None,
    };
    let started = Instant::now();
    let (report, data) = match (&args.export, &args.database) {
        (Some(export), _) => {
            let cp_path = args
                .checkpoints
                .clone()
                .unwrap_or_else(|| export.with_extension("checkpoints.jsonl"));
            let cps = read_checkpoints(&cp_path)?;
            let data =
                std::fs::read(export).with_context(|| format!("reading {}", export.display()))?;
            // An export holds no retention anchor: one that starts after record 1 is reported.
            let report = verify_export(
                export_lines(&data),
                &VerifyInput {
                    policy: &policy,
                    checkpoints: &cps,
                    trusted: trusted.as_ref(),
                    start: ChainStart::Genesis,
                },
            );
            (report, Some(data))
        }
        (None, Some(url)) => {
            let store = signaalpoort_store::Store::open(
                url,
                signaalpoort_store::StoreOptions {
                    read_only: true,
                    ..Default::default()
                },
            )
            .await?;
            let report = store.verify_log(&policy, trusted.as_ref()).await;
            store.close().await;
            (report?, None)
        }
        (None, None) => anyhow::bail!("give --export or --database"),
    };
    let elapsed = started.elapsed();
    Ok(print_report(&report, data.as_deref(), elapsed))
}

fn print_report(
    report: &VerifyReport,
    data: Option<&[u8]>,
    elapsed: std::time::Duration,
) -> ExitCode {
    let rate = report.records as f64 / elapsed.as_secs_f64().max(1e-9);
    match &report.first_problem {
        None => {
            println!(
                "OK: {} records, chain and Merkle tree intact, {} checkpoint(s) matched; root {}",
                report.records,
                report.checkpoints_checked,
                hex::encode(report.root)
            );
            println!(
                "covered through record {} by {} checkpoints",
                report.covered_through(),
                if report.witnesses_required {
                    "witnessed"
                } else {
                    "log-signed (no witnesses required)"
                }
            );
            println!(
                "verified in {:.3} s ({:.0} records/s)",
                elapsed.as_secs_f64(),
                rate
            );
            if report.uncovered() > 0 {
                println!(
                    "NOT YET COVERED: {} record(s) after record {} are intact but no accepted checkpoint vouches for them yet",
                    report.uncovered(),
                    report.covered_through()
                );
                return ExitCode::from(3);
            }
            ExitCode::SUCCESS
        }
        Some(problem) => {
            println!("FAILED: {problem}");
            if let (Some(data), Some(_)) = (data, problem.seq) {
                if let Some(line) = export_lines(data).nth(problem.line.saturating_sub(1) as usize)
                {
                    if let Some(r) = AccessRecord::from_export_line(&String::from_utf8_lossy(line))
                    {
                        println!(
                            "first bad record: seq {} at {} by {} ({})",
                            r.seq, r.draft.time, r.draft.agency_oin, r.draft.action
                        );
                    }
                }
            }
            println!("{} record(s) before it verified.", report.records);
            ExitCode::from(2)
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
