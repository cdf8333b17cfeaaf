//! Configuration: one TOML file, every key overridable by an environment variable
//! `SIGNAALPOORT_<SECTION>_<KEY>` (e.g. `SIGNAALPOORT_SERVER_LISTEN`). `deploy/signaalpoort.example.toml`
//! documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use signaalpoort_core::{Oin, Role};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    #[serde(default)]
    pub signals: SignalsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub coordination: CoordinationConfig,
    /// The agency registry: OIN → name and role. Roles come from here, never from a request.
    #[serde(default, rename = "agency")]
    pub agencies: Vec<AgencyEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC over mutual TLS.
    pub listen: SocketAddr,
    /// Plaintext admin HTTP: /livez, /readyz, /metrics. Bind to a private interface.
    pub admin_listen: Option<SocketAddr>,
    /// Holds the SQLite database (when database_url is unset) and the keys.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default `sqlite://<data_dir>/signaalpoort.db`.
    #[serde(default)]
    pub database_url: Option<String>,
    /// JSON logs (for containers) instead of human-readable ones.
    #[serde(default)]
    pub log_json: bool,
    #[serde(default = "defaults::handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
    #[serde(default = "defaults::shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// SQLite: `/readyz` fails when the database's file system has less free space than this, so
    /// traffic moves away before writes fail for want of space.
    #[serde(default = "defaults::min_free_disk_mib")]
    pub min_free_disk_mib: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SignalsConfig {
    /// Lifetime of a signal registered without expires_at (capped at two years).
    pub default_lifetime_days: u32,
    /// How often expired signals are purged.
    pub purge_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How often a checkpoint is signed over the Merkle tree when it grew (also on shutdown).
    pub checkpoint_interval_secs: u64,
    /// The log's name: the origin line of its checkpoints and the name of its key
    /// (c2sp.org/tlog-checkpoint). Unique per deployment; no spaces, no '+'.
    pub log_origin: String,
    /// Witnesses each new checkpoint is submitted to (c2sp.org/tlog-witness).
    pub witnesses: Vec<WitnessConfig>,
    /// How many witnesses must cosign for a checkpoint to count as witnessed; default: all.
    pub witness_quorum: Option<usize>,
    /// How long access-log records are kept; independent of signal expiry.
    pub retention_days: u32,
    /// Alert when one actor touches more than this many distinct persons within the window.
    pub unusual_volume_threshold: u32,
    pub unusual_volume_window_secs: u64,
}

/// One witness: where its `add-checkpoint` lives and its cosignature key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The submission prefix, `http://host:port[/path]`.
    pub url: String,
    /// Its verifier key, `<name>+<id>+<base64(0x04 || key)>`.
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_message_bytes: usize,
    /// Sustained calls per second per agency; bursts up to `burst`.
    pub calls_per_second_per_agency: u32,
    pub burst_per_agency: u32,
    pub max_streams_per_agency: u32,
    pub watch_heartbeat_secs: u64,
    pub watch_max_age_secs: u64,
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinationConfig {
    /// A match without a coordinator for this long raises a reminder.
    pub reminder_after_days: u32,
    /// Shorter when a Veilig Thuis or safety signal is part of the match.
    pub reminder_after_days_with_safety_signal: u32,
    /// Chronicity indicator: how many distinct agencies make a quarter "several agencies involved".
    pub chronicity_min_agencies: u32,
    /// ... in how many quarters of the window that must hold (5 = recurring over more than a year).
    pub chronicity_min_quarters: u32,
    /// How many quarters back the indicator looks (8 = two years).
    pub chronicity_window_quarters: u32,
    /// Safety signals within the window that count as "repeated".
    pub chronicity_repeated_safety_signals: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyEntry {
    pub oin: String,
    pub name: String,
    pub role: String,
}

mod defaults {
    pub fn handshake_timeout_secs() -> u64 {
        10
    }
    pub fn shutdown_grace_secs() -> u64 {
        20
    }
    pub fn min_free_disk_mib() -> u64 {
        64
    }
}

impl Default for SignalsConfig {
    fn default() -> Self {
        SignalsConfig {
            default_lifetime_days: 365,
            purge_interval_secs: 3600,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_interval_secs: 300,
            log_origin: "signaalpoort.local/access-log".to_owned(),
            witnesses: Vec::new(),
            witness_quorum: None,
            retention_days: 7 * 365,
            unusual_volume_threshold: 50,
            unusual_volume_window_secs: 3600,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_message_bytes: 256 * 1024,
            calls_per_second_per_agency: 2000,
            burst_per_agency: 4000,
            max_streams_per_agency: 32,
            watch_heartbeat_secs: 15,
            watch_max_age_secs: 3600,
            request_timeout_secs: 30,
        }
    }
}

impl Default for CoordinationConfig {
    fn default() -> Self {
        CoordinationConfig {
            reminder_after_days: 28,
            reminder_after_days_with_safety_signal: 7,
            chronicity_min_agencies: 2,
            chronicity_min_quarters: 5,
            chronicity_window_quarters: 8,
            chronicity_repeated_safety_signals: 2,
        }
    }
}

impl Config {
    /// Reads a TOML file, applies environment overrides and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut value: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        apply_env_overrides(&mut value, std::env::vars())?;
        let mut config: Config =
            toml::Value::Table(value)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
        // Relative paths are relative to the config file, so a config works from any directory.
        if let Some(base) = path.parent() {
            config.resolve_paths(base);
        }
        config.validate()?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.server.data_dir);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        fix(&mut self.tls.client_ca);
        self.tls.crls.iter_mut().for_each(fix);
    }

    pub fn database_url(&self) -> String {
        self.server.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.server.data_dir.join("signaalpoort.db").display()
            )
        })
    }

    /// Checks what TOML types cannot: OINs, roles, duplicates, ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.agencies.iter().enumerate() {
            if Oin::parse(&a.oin).is_err() {
                problems.push(format!(
                    "agency[{i}] ({}): oin {:?} must be 20 digits",
                    a.name, a.oin
                ));
            }
            if Role::from_code(&a.role).is_none() {
                let roles: Vec<_> = Role::ALL.iter().map(|r| r.code()).collect();
                problems.push(format!(
                    "agency[{i}] ({}): role {:?} is not one of {}",
                    a.name,
                    a.role,
                    roles.join(", ")
                ));
            }
            if a.name.trim().is_empty() {
                problems.push(format!("agency[{i}]: name is empty"));
            }
            if !seen.insert(&a.oin) {
                problems.push(format!(
                    "agency[{i}] ({}): oin {} is listed twice",
                    a.name, a.oin
                ));
            }
        }
        if self.agencies.is_empty() {
            problems.push("no [[agency]] entries: nobody could call the gateway".to_owned());
        }
        if self.signals.default_lifetime_days == 0 || self.signals.default_lifetime_days > 730 {
            problems.push(
                "signals.default_lifetime_days must be 1..=730 (two years at most)".to_owned(),
            );
        }
        let c = &self.coordination;
        if c.reminder_after_days == 0 || c.reminder_after_days_with_safety_signal == 0 {
            problems.push("coordination.reminder_after_days and reminder_after_days_with_safety_signal must be at least 1".to_owned());
        }
        if c.chronicity_window_quarters == 0
            || c.chronicity_min_quarters > c.chronicity_window_quarters
        {
            problems.push("coordination.chronicity_min_quarters must be at most chronicity_window_quarters (and the window at least 1)".to_owned());
        }
        if self.audit.checkpoint_interval_secs == 0 {
            problems.push("audit.checkpoint_interval_secs must be at least 1".to_owned());
        }
        if self.audit.log_origin.is_empty()
            || self
                .audit
                .log_origin
                .chars()
                .any(|c| c.is_whitespace() || c == '+')
        {
            problems.push("audit.log_origin must be a name without spaces or '+'".to_owned());
        }
        for (i, w) in self.audit.witnesses.iter().enumerate() {
            if let Err(e) = signaalpoort_core::access_log::WitnessKey::parse(&w.key) {
                problems.push(format!("audit.witnesses[{i}].key: {e}"));
            }
            if !w.url.starts_with("http://") {
                problems.push(format!("audit.witnesses[{i}].url must start with http://"));
            }
        }
        if self.audit.witness_quorum.is_some_and(|k| {
            k > self.audit.witnesses.len() || (k == 0 && !self.audit.witnesses.is_empty())
        }) {
            problems.push(
                "audit.witness_quorum must be between 1 and the number of witnesses".to_owned(),
            );
        }
        if self.audit.retention_days < 365 {
            problems.push("audit.retention_days must be at least 365".to_owned());
        }
        if self.limits.max_message_bytes < 1024 {
            problems.push("limits.max_message_bytes must be at least 1024".to_owned());
        }
        if self.limits.calls_per_second_per_agency == 0 || self.limits.burst_per_agency == 0 {
            problems.push(
                "limits.calls_per_second_per_agency and burst_per_agency must be positive"
                    .to_owned(),
            );
        }
        if self.limits.watch_heartbeat_secs == 0 || self.limits.watch_max_age_secs == 0 {
            problems.push(
                "limits.watch_heartbeat_secs and watch_max_age_secs must be positive".to_owned(),
            );
        }
        if let Some(url) = &self.server.database_url {
            if !(url.starts_with("sqlite://")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                problems.push(format!(
                    "server.database_url {url:?} must start with sqlite:// or postgres://"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems.join("\n")))
        }
    }
}

/// `SIGNAALPOORT_SECTION_KEY=value` sets `[section] key`; the value is parsed as TOML when it can
/// be (numbers, booleans, arrays), else taken as a string.
fn apply_env_overrides(
    table: &mut toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    const SECTIONS: &[&str] = &[
        "server",
        "tls",
        "signals",
        "audit",
        "limits",
        "coordination",
    ];
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix("SIGNAALPOORT_") else {
            continue;
        };
        let rest = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            continue;
        };
        let key = &rest[section.len() + 1..];
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let entry = table
            .entry((*section).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(section_table) = entry else {
            return Err(ConfigError::Env {
                name,
                message: format!("[{section}] is not a table"),
            });
        };
        section_table.insert(key.to_owned(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_parse_types() {
        let mut t: toml::Table = toml::from_str("[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        apply_env_overrides(
            &mut t,
            vec![
                (
                    "SIGNAALPOORT_SERVER_LISTEN".to_owned(),
                    "0.0.0.0:7443".to_owned(),
                ),
                (
                    "SIGNAALPOORT_AUDIT_RETENTION_DAYS".to_owned(),
                    "4000".to_owned(),
                ),
                ("OTHER".to_owned(), "x".to_owned()),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(t["server"]["listen"].as_str(), Some("0.0.0.0:7443"));
        assert_eq!(t["audit"]["retention_days"].as_integer(), Some(4000));
    }
}
