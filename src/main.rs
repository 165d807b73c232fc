//! The `freshet` binary: parse arguments, hand over to [`freshet::cli`].

fn main() -> std::process::ExitCode {
    freshet::cli::main()
}
