//! The `raftgres` binary: parses the command line, sets up telemetry and dispatches; the only
//! place that exits the process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::Subcommand;
use tokio_util::sync::CancellationToken;

/// PostgreSQL high availability with embedded Raft consensus: no etcd.
#[derive(Parser)]
#[command(name = "raftgres", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the Raft replica, the PostgreSQL supervisor, the HA loop and the REST API.
    Run {
        /// Node configuration (Patroni-style YAML with a `raft:` section).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Validate a configuration file without starting anything.
    Check {
        /// Node configuration.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Start a local three-node cluster (three `raftgres run` processes with real PostgreSQL
    /// on 127.0.0.1, plus HAProxy when installed) and keep it running until Ctrl-C.
    Demo(raftgres::demo::DemoArgs),
    /// Chaos test: a local three-node cluster under seeded faults with a write workload, then
    /// checks for split brain, lost acknowledged writes, liveness and clean logs; exits non-zero
    /// on any violation.
    Chaos(raftgres::chaos::ChaosArgs),
    /// Internal: the fence guard `raftgres run` starts next to PostgreSQL; it stops the postmaster
    /// when the lease raftgres last wrote to FILE runs out (raftgres killed or frozen).
    #[command(hide = true)]
    Guard {
        /// The guard file written by raftgres.
        #[arg(long)]
        file: PathBuf,
        /// The raftgres process that started this guard.
        #[arg(long)]
        parent: u32,
    },
    /// Certificates of the raft peer port's mutual TLS (`certs init`).
    #[command(subcommand)]
    Certs(raftgres::cli::certs::CertsCommand),
    #[command(flatten)]
    Ctl(raftgres::cli::CtlCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = runtime.block_on(dispatch(cli.command));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let loaded = raftgres::config::load::load_private(&config, &raftgres::config::process_env())?;
            raftgres::telemetry::init(loaded.config.log.level.as_filter());
            for warning in &loaded.warnings {
                tracing::warn!(warning = %warning, "configuration");
            }
            let problems = raftgres::config::check_environment(&loaded.config);
            if let Some(first) = problems.into_iter().next() {
                return Err(first.into());
            }
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            raftgres::node::run(loaded.config, shutdown).await
        }
        Command::Check { config } => {
            let loaded = raftgres::config::load::load_private(&config, &raftgres::config::process_env())?;
            for warning in &loaded.warnings {
                println!("warning: {warning}");
            }
            // One line per problem on stderr; the first one is the error.
            let mut problems = raftgres::config::check_environment(&loaded.config).into_iter();
            match problems.next() {
                None => {
                    println!("{}: configuration is valid", config.display());
                    Ok(())
                }
                Some(first) => Err(first.into()),
            }
        }
        Command::Guard { file, parent } => raftgres::postgres::guard::run(file, parent).await,
        Command::Certs(command) => raftgres::cli::certs::run(command),
        Command::Ctl(command) => raftgres::cli::run(command).await,
        Command::Chaos(args) => {
            raftgres::telemetry::init("warn");
            let n_violations = raftgres::chaos::run(args).await?;
            if n_violations > 0 {
                // The summary on stdout ends with `violations: N`; the exit status says it too.
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Demo(args) => {
            raftgres::telemetry::init("info");
            let shutdown = CancellationToken::new();
            spawn_signal_handler(shutdown.clone());
            raftgres::demo::run(args, shutdown).await
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
