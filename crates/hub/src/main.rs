//! The `loyalty-hub` command line: `run --config PATH` (serve until SIGTERM/SIGINT) and
//! `check-config --config PATH` (exit 2 listing every error by key path). Exit codes: 0 done,
//! 1 failed at start or while running, 2 configuration errors.

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Head office for loyalty-gateway stores (SPEC 2.8).
#[derive(Parser)]
#[command(name = "loyalty-hub", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve stores until stopped.
    Run {
        /// The configuration file.
        #[arg(long, default_value = "/etc/loyalty-hub/hub.toml")]
        config: PathBuf,
    },
    /// Check the configuration file and exit (2: errors, each named by key path).
    CheckConfig {
        /// The configuration file.
        #[arg(long, default_value = "/etc/loyalty-hub/hub.toml")]
        config: PathBuf,
    },
}

fn report(path: &Path, errors: &[loyalty_hub::config::ConfigError]) -> ExitCode {
    eprintln!(
        "{}: {} configuration error(s):",
        path.display(),
        errors.len()
    );
    for error in errors {
        eprintln!("  {error}");
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LOYALTY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::CheckConfig { config } => match loyalty_hub::config::load(&config) {
            Ok(_) => {
                println!("{}: configuration is valid", config.display());
                ExitCode::SUCCESS
            }
            Err(errors) => report(&config, &errors),
        },
        Command::Run { config: path } => {
            let config = match loyalty_hub::config::load(&path) {
                Ok(config) => config,
                Err(errors) => return report(&path, &errors),
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(run(config))
        }
    }
}

async fn run(config: loyalty_hub::config::Config) -> ExitCode {
    let running = match loyalty_hub::start(config).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // Tests and supervisors read the bound address from this line.
    println!("listening on {}", running.addr);
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("error: cannot handle SIGTERM: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
    running.shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), running.task).await;
    ExitCode::SUCCESS
}
