//! The `ringmq` broker daemon: parse the configuration, start logging and the runtime, serve until
//! SIGINT or SIGTERM. Everything else lives in the library.

use std::io::Write;
use std::process::ExitCode;

use ringmq_broker::config::{self, Loaded, LogFormat};
use ringmq_broker::server::Broker;

/// Counts every heap allocation, so `Stats` (and `ringmq-bench`) can report allocations per
/// message. One atomic increment per allocation, and the hot path makes none.
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn main() -> ExitCode {
    ringmq_broker::metrics::set_allocation_counter(|| ALLOCATOR.stats().allocations as u64);
    let (config, renamed) = match config::load(std::env::args_os()) {
        Ok(Loaded::Run { config, renamed }) => (*config, renamed),
        Ok(Loaded::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match config.log_format {
        LogFormat::Text => subscriber.init(),
        LogFormat::Json => subscriber.json().init(),
    }
    for renamed in &renamed {
        tracing::warn!(old = %renamed.old, new = %renamed.new, "{renamed}");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all().thread_name("ringmq");
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads as usize);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let data_dir = config.data_dir.clone();
    runtime.block_on(async move {
        let broker = match Broker::start(config).await {
            Ok(broker) => broker,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        let (address, metrics, kafka) =
            match (broker.local_addr(), broker.metrics_addr(), broker.kafka_addr()) {
                (Ok(address), Ok(metrics), Ok(kafka)) => (address, metrics, kafka),
                (Err(error), ..) | (_, Err(error), _) | (.., Err(error)) => {
                    eprintln!("error: cannot read the listening address: {error}");
                    return ExitCode::FAILURE;
                }
            };
        let metrics = match metrics {
            Some(metrics) => format!("metrics at http://{metrics}/metrics"),
            None => "metrics off".to_owned(),
        };
        let kafka = match kafka {
            Some(kafka) => format!("kafka at {kafka}"),
            None => "kafka off".to_owned(),
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "ringmq listening on {address}, data in {}, {metrics}, {kafka}",
            data_dir.display()
        );
        let _ = stdout.flush();
        drop(stdout);
        if let Ok(user) = std::env::var("RINGMQ_ROOT_USER") {
            // The first superuser: a user with a password, or (no password) the subject of a
            // client certificate.
            if let Ok(password) = std::env::var("RINGMQ_ROOT_PASSWORD") {
                match broker.bootstrap_user(&user, &password) {
                    Ok(true) => tracing::info!(%user, "first user added from RINGMQ_ROOT_USER"),
                    Ok(false) => {}
                    Err(error) => {
                        eprintln!("error: RINGMQ_ROOT_USER: {error}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            match broker.bootstrap_superuser(&user) {
                Ok(true) => {
                    tracing::info!(principal = %user, "first superuser from RINGMQ_ROOT_USER")
                }
                Ok(false) => {}
                Err(error) => {
                    eprintln!("error: RINGMQ_ROOT_USER: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        if let Some(tls) = broker.tls() {
            tokio::spawn(reload_on_sighup(tls));
        }
        broker.serve(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}

/// Reads the TLS files again on every SIGHUP; a failed reload keeps the configuration in use.
async fn reload_on_sighup(tls: std::sync::Arc<ringmq_broker::tls::Tls>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; TLS files are not reloaded");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
            Err(error) => {
                tracing::error!(%error, "SIGHUP: TLS reload failed; the old certificate stays");
            }
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; stop with SIGINT");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}
