use clap::Parser as _;
use ephemera::{shutdown, telemetry, Application, Config};

/// mimalloc returns freed memory to the system where glibc's per-thread arenas kept it: after a
/// burst of joins the server's resident memory stays near its live heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
