//! The `jobd` binary: a thin shell over the `jobd_cli` library.

fn main() -> std::process::ExitCode {
    jobd_cli::run()
}
