//! The `loyalty-gateway` command line (SPEC 2.1): parses arguments, sets up logging, and hands
//! each subcommand to the library. Maps failures to exit codes: 0 ok, 1 runtime failure,
//! 2 invalid configuration or usage.

use clap::{Parser, Subcommand};
use loyalty_daemon::config;
use std::path::PathBuf;
use std::process::ExitCode;

/// Default configuration path of an installed gateway.
const DEFAULT_CONFIG: &str = "/etc/loyalty-gateway/gateway.toml";

#[derive(Parser)]
#[command(name = "loyalty-gateway", version, about = "In-store loyalty gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run(ConfigArg),
    /// Validate the configuration: exit 0, or exit 2 naming every error by key path.
    CheckConfig(ConfigArg),
    /// A whole simulated store on this machine, no hardware needed.
    #[cfg(feature = "tools")]
    Demo(loyalty_tools::demo::DemoArgs),
    /// Replay the ledger journal and check every balance and the hash chain.
    Verify(ConfigArg),
    /// Compact the database now; stop the service first (the daemon also compacts by itself
    /// at start-up when much of sled's file is free segments).
    Compact(ConfigArg),
    /// Voucher signing keys.
    #[command(subcommand)]
    Keys(loyalty_daemon::vouchers::KeysCommand),
    /// Staff goodwill vouchers.
    #[command(subcommand)]
    Voucher(loyalty_daemon::vouchers::VoucherCommand),
    /// The reference CRM receiver (for integrators and tests; not a CRM).
    #[cfg(feature = "tools")]
    ReferenceCrm(loyalty_tools::crm_reference::ReferenceCrmArgs),
    /// Load generator against a running gateway.
    #[cfg(feature = "tools")]
    Loadgen(loyalty_tools::loadgen::LoadgenArgs),
    /// Fill an EMPTY store with synthetic customers, to measure memory and start-up on the box
    /// (cross/measure.sh); refuses a store that holds customers.
    SeedTestCustomers(SeedArgs),
}

#[derive(clap::Args)]
struct SeedArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// How many customers.
    #[arg(long)]
    count: u64,
    /// Card number prefix (default: the first of `cards.prefixes`).
    #[arg(long)]
    card_prefix: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "tools")]
    if matches!(cli.command, Command::Demo(_)) && std::env::var_os("LOYALTY_LOG").is_none() {
        // The demo explains itself; only warnings and errors from the daemon's log.
        std::env::set_var("LOYALTY_LOG", "warn");
    }
    loyalty_daemon::telemetry::init_logging();
    let result = match cli.command {
        Command::Run(arg) => match config::load_built(&arg.config) {
            Ok(built) => loyalty_daemon::gateway::run_daemon(built),
            Err(errors) => Ok(report_config_errors(&arg.config, &errors)),
        },
        Command::CheckConfig(arg) => match config::load(&arg.config) {
            Ok(_) => {
                println!("{}: configuration is valid", arg.config.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => Ok(report_config_errors(&arg.config, &errors)),
        },
        #[cfg(feature = "tools")]
        Command::Demo(args) => loyalty_tools::demo::main(args),
        Command::Verify(arg) => with_config(&arg.config, loyalty_daemon::commands::verify_command),
        Command::Compact(arg) => {
            with_config(&arg.config, loyalty_daemon::commands::compact_command)
        }
        Command::Keys(command) => loyalty_daemon::vouchers::keys_main(command),
        Command::Voucher(command) => loyalty_daemon::vouchers::voucher_main(command),
        #[cfg(feature = "tools")]
        Command::ReferenceCrm(args) => loyalty_tools::crm_reference::main(args),
        #[cfg(feature = "tools")]
        Command::Loadgen(args) => loyalty_tools::loadgen::main(args),
        Command::SeedTestCustomers(args) => match config::load(&args.config.config) {
            Ok(config) => loyalty_daemon::commands::seed_test_customers_command(
                config,
                args.count,
                args.card_prefix,
            ),
            Err(errors) => Ok(report_config_errors(&args.config.config, &errors)),
        },
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn with_config(
    path: &std::path::Path,
    run: fn(config::Config) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    match config::load(path) {
        Ok(config) => run(config),
        Err(errors) => Ok(report_config_errors(path, &errors)),
    }
}

fn report_config_errors(path: &std::path::Path, errors: &[config::ConfigError]) -> ExitCode {
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
