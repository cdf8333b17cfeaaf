//! `signaalpoort-bench`: audited calls per second and latency, beside a bare tonic mTLS server.
//!
//!     cargo run --release -p signaalpoort-bench            # full run, writes BENCHMARKS.md + JSON
//!     cargo run --release -p signaalpoort-bench -- --smoke # seconds-long, for CI
//!     cargo run --release -p signaalpoort-bench -- soak    # 10 minutes of mixed load per backend
//!
//! The servers run as child processes of this binary (roles `ceiling` and `gateway`), so their CPU
//! time and peak memory are measured apart from the load generator; both share this machine.

mod children;
mod load;
mod scenario;
mod soak;
mod store_ceiling;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Benchmark Signaalpoort against a bare tonic mutual-TLS server")]
struct Args {
    #[command(subcommand)]
    role: Option<Role>,
    /// A seconds-long run that only checks the benchmark still works.
    #[arg(long)]
    smoke: bool,
    /// PostgreSQL admin URL; a fresh database is created for the run. Default:
    /// SIGNAALPOORT_TEST_DATABASE_URL, else the PostgreSQL rows are skipped.
    #[arg(long, env = "SIGNAALPOORT_TEST_DATABASE_URL")]
    postgres: Option<String>,
    /// Seconds measured per cell (after the warm-up).
    #[arg(long)]
    seconds: Option<u64>,
    /// Skip the 1-million-household scale run.
    #[arg(long)]
    no_scale: bool,
    /// Where to write BENCHMARKS.md and the JSON results.
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Mixed load for minutes, sampling memory, descriptors, tasks, database and WAL size; fails
    /// if they grow without bound (see RELIABILITY.md).
    Soak {
        /// Seconds per backend (600 = the documented run; 60 in CI).
        #[arg(long, default_value_t = 600)]
        seconds: u64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 5)]
        sample_secs: u64,
    },
    #[command(hide = true)]
    Ceiling {
        #[arg(long)]
        pki: PathBuf,
    },
    #[command(hide = true)]
    Gateway {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &args.role {
            Some(Role::Ceiling { pki }) => children::serve_ceiling(pki).await,
            Some(Role::Gateway { config }) => children::serve_gateway(config).await,
            Some(Role::Soak {
                seconds,
                sample_secs,
            }) => {
                soak::run(soak::SoakPlan {
                    seconds: *seconds,
                    sample_secs: (*sample_secs).max(1),
                    postgres: args.postgres.clone(),
                    out: args.out.join("bench-results"),
                })
                .await
            }
            None => {
                scenario::run(scenario::Plan::from_args(
                    args.smoke,
                    args.seconds,
                    args.no_scale,
                    args.postgres.clone(),
                    args.out.clone(),
                ))
                .await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
