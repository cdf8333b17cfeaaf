//! Fresh databases for tests and benchmarks. PostgreSQL tests run when
//! `SIGNAALPOORT_TEST_DATABASE_URL` names an admin URL; with `SIGNAALPOORT_REQUIRE_POSTGRES=1` a
//! missing or unreachable server is a failure, not a skip (CI).

use sqlx::{Connection, Executor};

use crate::StoreError;

/// Creates database `name` on the server of `admin_url` and returns its URL.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await?;
    let base = match admin_url.rfind('/') {
        Some(i) if i > "postgres://".len() => &admin_url[..i],
        _ => admin_url,
    };
    let (base, query) = match admin_url.split_once('?') {
        Some((_, q)) => (base.split('?').next().unwrap_or(base), format!("?{q}")),
        None => (base, String::new()),
    };
    Ok(format!("{base}/{name}{query}"))
}

/// Drops database `name` on the server of `admin_url`, closing any sessions still on it.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await?;
    Ok(())
}

/// The name of a database made for one test: `SIGNAALPOORT_TEST_DB_PREFIX` (set per run by
/// `scripts/test.sh`, which drops the run's databases when it ends) and a random part.
fn test_database_name() -> String {
    let prefix = std::env::var("SIGNAALPOORT_TEST_DB_PREFIX")
        .ok()
        .filter(|p| {
            !p.is_empty()
                && p.len() <= 30
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .unwrap_or_else(|| "sp_test_".to_owned());
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// A fresh, empty database for one test, or `None` when PostgreSQL tests are not configured.
pub async fn fresh_postgres_url() -> Option<String> {
    let required = std::env::var("SIGNAALPOORT_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
    let Ok(admin) = std::env::var("SIGNAALPOORT_TEST_DATABASE_URL") else {
        assert!(
            !required,
            "SIGNAALPOORT_REQUIRE_POSTGRES=1 but SIGNAALPOORT_TEST_DATABASE_URL is not set"
        );
        return None;
    };
    let name = test_database_name();
    match create_database(&admin, &name).await {
        Ok(url) => Some(url),
        Err(e) => {
            assert!(
                !required,
                "PostgreSQL at SIGNAALPOORT_TEST_DATABASE_URL is required but unusable: {e}"
            );
            eprintln!("postgres suite skipped: {e}");
            None
        }
    }
}
