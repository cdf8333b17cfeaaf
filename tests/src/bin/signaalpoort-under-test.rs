//! The real `signaalpoort` binary, built inside this package so its tests can start it as a
//! separate process (kill -9 and restart tests).

fn main() -> std::process::ExitCode {
    signaalpoort_cli::main()
}
