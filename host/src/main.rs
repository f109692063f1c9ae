//! The `microgate` command: startup only. Parses the command line, loads the config file,
//! sets up logging and hands over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: per-request allocations (futures, headers, extensions) are small and short-lived,
/// which it serves faster than glibc's malloc (measured in docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use microgate::config::Config;

#[derive(Parser)]
#[command(
    name = "microgate",
    version,
    about = "An API gateway that learns from its own traffic"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "config.yml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print the routes it defines.
    CheckConfig {
        /// Configuration file.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { path } => check_config(&path),
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    let config = Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })?;
    // Building the gateway also loads key files; report those as config errors too.
    if let Err(e) = microgate::auth::Authenticator::new(&config.auth) {
        eprintln!("error: {}: {e}", path.display());
        return Err(ExitCode::from(2));
    }
    Ok(config)
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log_guard = init_logging(&config.log.level);
    // One worker: tokio's single-threaded scheduler, which skips work-stealing's
    // bookkeeping. More (or the default, one per core): the multi-threaded one.
    let mut builder = match config.proxy.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(microgate::run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "gateway failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{}: OK", path.display());
    let _ = writeln!(
        out,
        "listen {}  admin {}",
        config.listen, config.admin.listen
    );
    let _ = writeln!(out, "routes (longest prefix wins):");
    for route in &config.routes {
        let backends = config
            .upstreams
            .get(&route.upstream)
            .map(|u| {
                u.backends
                    .iter()
                    .map(|b| b.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let limit = route.rate_limit.as_ref().map_or("none".to_owned(), |rl| {
            format!(
                "{}/min burst {} per {}",
                rl.requests_per_minute,
                rl.burst.unwrap_or(rl.requests_per_minute),
                rl.key.as_str()
            )
        });
        let _ = writeln!(
            out,
            "  {:<24} -> {} [{}]  auth={} rate_limit={} connect_timeout={:?} request_timeout={:?}{}",
            route.path,
            route.upstream,
            backends,
            route.auth.as_str(),
            limit,
            route
                .connect_timeout
                .unwrap_or(config.proxy.connect_timeout),
            route
                .request_timeout
                .unwrap_or(config.proxy.request_timeout),
            if route.strip_prefix {
                " strip_prefix"
            } else {
                ""
            },
        );
    }
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    ExitCode::SUCCESS
}

/// JSON lines on stdout, written by a background thread so requests never wait on the
/// terminal or pipe. `RUST_LOG` overrides the configured level.
fn init_logging(level: &str) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .finish(std::io::stdout());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .init();
    guard
}
