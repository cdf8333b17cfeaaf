//! The citizen access report (AVG art. 15, inzage): which organisations accessed the family's data
//! in Signaalpoort, when and why — in Dutch, as text or HTML. It names organisations, not employees
//! (EU Court C-579/21: dates and purposes are owed, not in principle the names of staff).

use signaalpoort_core::access_log::AccessRecord;
use signaalpoort_core::Purpose;
use time::OffsetDateTime;

pub struct ReportEntry {
    pub time: OffsetDateTime,
    pub organisation: String,
    pub action: &'static str,
    pub purpose: &'static str,
}

pub fn entries(
    records: &[AccessRecord],
    organisation: impl Fn(&str) -> String,
) -> Vec<ReportEntry> {
    records
        .iter()
        .filter(|r| r.draft.status_code == 0)
        .map(|r| ReportEntry {
            time: r.draft.time,
            organisation: organisation(&r.draft.agency_oin),
            action: action_nl(&r.draft.action),
            purpose: r.draft.purpose.map_or("-", purpose_nl),
        })
        .collect()
}

pub fn action_nl(action: &str) -> &'static str {
    match action {
        "RegisterSignal" => "signaal vastgelegd of vernieuwd",
        "WithdrawSignal" => "signaal ingetrokken",
        "ListSignals" => "eigen signalen bekeken",
        "QueryInvolvement" => "betrokkenheid van anderen opgevraagd",
        "ReceiveNotifications" => "meldingen over betrokkenheid opgehaald",
        "DeliverNotification" => "melding over betrokkenheid ontvangen",
        "DeclareHousehold" => "gezinssamenstelling vastgelegd",
        "DissolveHousehold" => "gezinssamenstelling beëindigd",
        "RecordConsent" => "toestemming vastgelegd",
        "WithdrawConsent" => "toestemming ingetrokken",
        "ListConsents" => "toestemmingen bekeken",
        "PurgeExpired" => "verlopen gegevens verwijderd",
        "QueryAccessLog" | "ExportAccessLog" => "toegangslog geraadpleegd (toezicht)",
        "CitizenReport" => "inzageoverzicht opgesteld",
        _ => "overige handeling",
    }
}

pub fn purpose_nl(p: Purpose) -> &'static str {
    match p {
        Purpose::CareCoordination => "afstemming van zorg",
        Purpose::ChildSafety => "veiligheid van een kind",
        Purpose::CaseCoordination => "casusregie",
        Purpose::Audit => "toezicht",
    }
}

fn date_time(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

const INTRO: &str = "Dit overzicht laat zien welke organisaties via Signaalpoort gegevens over u \
(en, als daarom is gevraagd, over uw gezin) hebben vastgelegd of ingezien, wanneer en met welk doel. \
Namen van medewerkers staan er niet in. Vragen? Neem contact op met de functionaris \
gegevensbescherming van uw gemeente.";

pub fn render_text(entries: &[ReportEntry], generated: OffsetDateTime) -> String {
    let mut out = format!(
        "INZAGEOVERZICHT SIGNAALPOORT\nOpgesteld op: {}\n\n{INTRO}\n\n",
        date_time(generated)
    );
    if entries.is_empty() {
        out.push_str("Er zijn in deze periode geen handelingen vastgelegd.\n");
        return out;
    }
    let w = entries
        .iter()
        .map(|e| e.organisation.chars().count())
        .max()
        .unwrap_or(12)
        .max(12);
    out.push_str(&format!(
        "{:<16}  {:<w$}  {:<38}  {}\n",
        "Datum en tijd", "Organisatie", "Handeling", "Doel"
    ));
    out.push_str(&format!("{}\n", "-".repeat(16 + 2 + w + 2 + 38 + 2 + 24)));
    for e in entries {
        out.push_str(&format!(
            "{:<16}  {:<w$}  {:<38}  {}\n",
            date_time(e.time),
            e.organisation,
            e.action,
            e.purpose
        ));
    }
    out.push_str(&format!("\nAantal handelingen: {}\n", entries.len()));
    out
}

pub fn render_html(entries: &[ReportEntry], generated: OffsetDateTime) -> String {
    let mut rows = String::new();
    for e in entries {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            date_time(e.time),
            escape(&e.organisation),
            e.action,
            e.purpose
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"nl\"><head><meta charset=\"utf-8\"><title>Inzageoverzicht Signaalpoort</title>\
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse;width:100%}}\
td,th{{border:1px solid #999;padding:.3em .5em;text-align:left}}@media print{{body{{margin:0}}}}</style></head>\n\
<body><h1>Inzageoverzicht Signaalpoort</h1><p>Opgesteld op: {}</p><p>{}</p>\n\
<table><thead><tr><th>Datum en tijd</th><th>Organisatie</th><th>Handeling</th><th>Doel</th></tr></thead><tbody>\n{}</tbody></table>\
<p>Aantal handelingen: {}</p></body></html>\n",
        date_time(generated),
        INTRO,
        rows,
        entries.len()
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
