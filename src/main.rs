//! The `raftgres` binary: parses the command line, sets up telemetry and dispatches; the only
//! place that exits the process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::Subcommand;
use raftgres::config::LogConfig;
use raftgres::config::LogLevel;
use tokio_util::sync::CancellationToken;

/// PostgreSQL high availability with embedded Raft consensus: no etcd.
#[derive(Parser)]
#[command(name = "raftgres", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// patronictl's global options (`-c`, `--url`, `-k`), before or after the command.
    #[command(flatten)]
    target: raftgres::cli::client::Target,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the Raft replica, the PostgreSQL supervisor, the HA loop and the REST API.
    ///
    /// The configuration is FILE or `-c FILE` (Patroni-style YAML with a `raft:` section, or a directory of
    /// them); without either, the whole YAML in `PATRONI_CONFIGURATION` (or `RAFTGRES_CONFIGURATION`), else the
    /// `RAFTGRES_*`/`PATRONI_*` variables alone, as Patroni reads them.
    Run {
        /// Node configuration (same as -c FILE).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Validate a configuration (FILE, -c FILE, or the environment as `run` reads it) without starting anything.
    Check {
        /// Node configuration (same as -c FILE).
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Start a local three-node cluster (three `raftgres run` processes with real PostgreSQL
    /// on 127.0.0.1, plus HAProxy when installed) and keep it running until Ctrl-C.
    Demo(raftgres::demo::DemoArgs),
    /// Chaos test: a local three-node cluster under seeded faults with a write workload, then
    /// checks for split brain, lost acknowledged writes, liveness and clean logs; exits non-zero
    /// on any violation.
    Chaos(raftgres::chaos::ChaosArgs),
    /// Certificates of the raft peer port's mutual TLS (`certs init`).
    #[command(subcommand)]
    Certs(raftgres::cli::certs::CertsCommand),
    #[command(flatten)]
    Ctl(raftgres::cli::CtlCommand),
}

/// `raftgres guard` is the fence guard that `raftgres run` starts next to PostgreSQL when the `raftgres-guard` program
/// is not installed beside it (`postgres::guard::main`): parsed and run apart from the other commands, without the
/// async runtime, so the guard stays a small process.
fn main() -> ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|command| command == "guard") {
        args.remove(1);
        return raftgres::postgres::guard::main(args);
    }
    let cli = Cli::parse_from(raftgres::cli::patronictl_argv(std::env::args_os().collect()));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = runtime.block_on(dispatch(cli.command, cli.target));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, target: raftgres::cli::client::Target) -> anyhow::Result<()> {
    match command {
        Command::Run { file } => {
            let (_, source, loaded) = node_config(file, &target)?;
            // Kept for the node's lifetime; a reload (SIGHUP, POST /reload) re-applies the `log` section.
            let log = raftgres::telemetry::init(&loaded.config.log)?;
            for warning in &loaded.warnings {
                tracing::warn!(warning = %warning, "configuration");
            }
            let problems = raftgres::config::check_environment(&loaded.config);
            if let Some(first) = problems.into_iter().next() {
                return Err(first.into());
            }
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            let apply_log: raftgres::reload::LogApply =
                Box::new(move |config| log.apply(config).map_err(|e| raftgres::postgres::supervisor::error_chain(&e)));
            match raftgres::node::run(loaded, source, Some(apply_log), shutdown).await? {
                raftgres::node::Stopped::Shutdown => Ok(()),
                raftgres::node::Stopped::RestartInPlace => {
                    // exec only returns on failure: leave the restart to the service manager.
                    let e = raftgres::store_failure::restart_in_place();
                    Err(anyhow::Error::new(e).context("restart raftgres in place after the raft store failed"))
                }
            }
        }
        Command::Check { file } => {
            let (origin, _, loaded) = node_config(file, &target)?;
            for warning in &loaded.warnings {
                println!("warning: {warning}");
            }
            // One line per problem on stderr; the first one is the error.
            let mut problems = raftgres::config::check_environment(&loaded.config);
            // `run` starts without the device (the node stays a replica, as Patroni's does); `check` says so.
            problems.extend(raftgres::config::check_watchdog_device(&loaded.config));
            let mut problems = problems.into_iter();
            match problems.next() {
                None => {
                    println!("{origin}: configuration is valid");
                    Ok(())
                }
                Some(first) => Err(first.into()),
            }
        }
        Command::Certs(command) => raftgres::cli::certs::run(command),
        Command::Ctl(command) => raftgres::cli::run(command, &target).await,
        Command::Chaos(args) => {
            raftgres::telemetry::init(&LogConfig::with_level(LogLevel::Warn))?;
            let n_violations = raftgres::chaos::run(args).await?;
            if n_violations > 0 {
                // The summary on stdout ends with `violations: N`; the exit status says it too.
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Demo(args) => {
            raftgres::telemetry::init(&LogConfig::with_level(LogLevel::Info))?;
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            raftgres::demo::run(args, shutdown).await
        }
    }
}

/// The node configuration of `run` and `check`: `FILE` or `-c FILE` (not both), else the environment (the whole
/// YAML in `PATRONI_CONFIGURATION`/`RAFTGRES_CONFIGURATION`, or the variables alone). Returns where it came from
/// (for messages and for reloads) and the configuration.
fn node_config(
    file: Option<PathBuf>,
    target: &raftgres::cli::client::Target,
) -> anyhow::Result<(String, raftgres::reload::ConfigSource, raftgres::config::Loaded)> {
    let env = raftgres::config::process_env();
    let path = match (file, &target.config) {
        (Some(file), Some(config)) if &file != config => {
            anyhow::bail!("two configuration files given ({} and -c {}); give one", file.display(), config.display())
        }
        (Some(file), _) => Some(file),
        (None, config) => config.clone(),
    };
    match path {
        Some(path) => {
            let loaded = raftgres::config::load::load_private(&path, &env)?;
            Ok((path.display().to_string(), raftgres::reload::ConfigSource::Path(path), loaded))
        }
        None => {
            let origin = match raftgres::config::env::configuration_document(&env) {
                Some((name, _)) => format!("${name}"),
                None => {
                    let overrides = raftgres::config::env::overrides(&env)?;
                    anyhow::ensure!(
                        overrides.as_object().is_some_and(|vars| !vars.is_empty()),
                        "no configuration: give FILE (or -c FILE), or the whole YAML in PATRONI_CONFIGURATION"
                    );
                    "the RAFTGRES_*/PATRONI_* environment variables".to_string()
                }
            };
            Ok((origin, raftgres::reload::ConfigSource::Environment, raftgres::config::load::load_from_env(&env)?))
        }
    }
}

/// SIGTERM and SIGINT cancel `shutdown`; a second signal exits at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::signal;
        use tokio::signal::unix::SignalKind;
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers; stop raftgres with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
        shutdown.cancel();
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without a clean shutdown");
        std::process::exit(130);
    });
}
