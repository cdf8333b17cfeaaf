//! `signaalpoort`: parses arguments and hands over to [`signaalpoort_cli::run`].

fn main() -> std::process::ExitCode {
    signaalpoort_cli::main()
}
