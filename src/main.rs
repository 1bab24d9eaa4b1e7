//! The `berth` binary: parse the command line, run the command, exit with its code.

fn main() -> std::process::ExitCode {
    berth::cli::main()
}
