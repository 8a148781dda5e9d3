//! The `talos-pve` binary: parse arguments, run, map the outcome to an exit code.

fn main() -> std::process::ExitCode {
    talos_pve::cli::main()
}
