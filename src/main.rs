use clap::Parser as _;
use ephemera::{shutdown, telemetry, Application, Config};

/// mimalloc returns freed memory to the system where glibc's per-thread arenas kept it: after a
/// burst of joins the server's resident memory stays near its live heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's settings for a server that holds many small idle sockets: commit arena memory only
/// as it is used, and give freed pages back at once instead of after a second. With its Linux
/// defaults, 10,000 idle members cost 14 KB each in resident memory; with these, 3–4 KB, and no
/// measurable CPU (docs/performance.md). An operator's own value for either wins.
const ALLOCATOR_SETTINGS: [(&str, &str); 2] = [
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_PURGE_DELAY", "0"),
];

/// mimalloc reads its settings from the environment once, before `main`; the only safe way to
/// give them is to start the program again with them. Runs once: the new image finds them set.
fn apply_allocator_settings() {
    use std::os::unix::process::CommandExt as _;

    let missing: Vec<_> = ALLOCATOR_SETTINGS
        .iter()
        .filter(|(name, _)| std::env::var_os(name).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    command.args(args);
    for (name, value) in missing {
        command.env(name, value);
    }
    // `exec` returns only if it failed; the server then runs with the allocator's defaults.
    let error = command.exec();
    eprintln!("could not restart with the allocator settings ({error}); using its defaults");
}

fn main() -> std::process::ExitCode {
    // Before any thread exists.
    apply_allocator_settings();
    serve()
}

#[tokio::main]
async fn serve() -> std::process::ExitCode {
    telemetry::init_logging();
    let config = Config::parse();
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            log::error!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(shutdown::signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
