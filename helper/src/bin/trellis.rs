//! `trellis`: the command line of the Trellis helper. See `trellis --help`.

fn main() -> std::process::ExitCode {
    trellis_helper::cli::main()
}
