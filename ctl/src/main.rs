//! `drover-ctl`: see and steer a drover pool from the command line,
//! through its admin endpoint (the `drover-admin` crate, feature `admin`
//! of `drover`).
//!
//! ```text
//! drover-ctl status            # a table of the pool and its workers
//! drover-ctl status --json     # the same as JSON, for scripts
//! drover-ctl reload            # replace every worker, a few at a time
//! drover-ctl resize 8          # keep 8 workers
//! drover-ctl drain             # stop every worker; requests wait
//! drover-ctl resume            # start them again
//! ```
//!
//! It talks to the Unix socket at `--socket` (or `$DROVER_ADMIN_SOCKET`,
//! else the admin endpoint's default, `drover_admin::default_socket`), or
//! to `--addr host:port` (`$DROVER_ADMIN_ADDR`) over TCP, with `--token`
//! (`$DROVER_ADMIN_TOKEN`) if the endpoint wants one. It exits with 0 on
//! success, 1 when the endpoint cannot be reached or refuses (the reason
//! on standard error), 2 for a command line it does not understand.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use comfy_table::{presets, CellAlignment, Table};
use drover_admin::{AdminError, Client, Endpoint};
use drover_supervisor::PoolStatus;

/// See and steer a drover pool through its admin endpoint.
#[derive(Debug, Parser)]
#[command(name = "drover-ctl", version)]
struct Cli {
    /// The admin endpoint's Unix socket.
    #[arg(
        long,
        env = "DROVER_ADMIN_SOCKET",
        conflicts_with = "addr",
        global = true
    )]
    socket: Option<PathBuf>,
    /// The admin endpoint's TCP address, instead of a socket.
    #[arg(long, env = "DROVER_ADMIN_ADDR", global = true)]
    addr: Option<SocketAddr>,
    /// The endpoint's token, if it wants one.
    #[arg(
        long,
        env = "DROVER_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
    /// Print the pool's status as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for an answer, in seconds.
    #[arg(long, default_value_t = 120, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The pool and its workers (pid, state, memory, served, doing).
    Status,
    /// Replace every worker with a fresh process, a few at a time.
    Reload,
    /// Keep this many workers.
    Resize {
        /// How many workers (at least 1).
        workers: usize,
    },
    /// Stop every worker gracefully; requests wait until `resume`.
    Drain,
    /// Start the workers of a drained pool again.
    Resume,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("drover-ctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover-ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<(), AdminError> {
    let endpoint = match (&cli.addr, &cli.socket) {
        (Some(addr), _) => Endpoint::Tcp(*addr),
        (None, Some(path)) => Endpoint::Unix(path.clone()),
        (None, None) => Endpoint::Unix(drover_admin::default_socket()),
    };
    let mut client = Client::new(endpoint).timeout(Duration::from_secs(cli.timeout));
    if let Some(token) = &cli.token {
        client = client.token(token);
    }
    let (status, done) = match &cli.command {
        Command::Status => (client.status().await?, None),
        Command::Reload => (client.control("reload", None).await?, Some("reloaded")),
        Command::Resize { workers } => (
            client.control("resize", Some(*workers)).await?,
            Some("resized"),
        ),
        Command::Drain => (client.control("drain", None).await?, Some("drained")),
        Command::Resume => (client.control("resume", None).await?, Some("resumed")),
    };
    if cli.json {
        let json = serde_json::to_string_pretty(&status)
            .map_err(|e| AdminError::BadAnswer(e.to_string()))?;
        println!("{json}");
        return Ok(());
    }
    if let Some(done) = done {
        println!("{done}: {} workers", status.workers.len());
    }
    print!("{}", render(&status));
    Ok(())
}

/// The status as `pm2 ls` shows its processes: a line for the pool, a
/// table of its workers.
fn render(status: &PoolStatus) -> String {
    let mut out = format!(
        "pool {}: {}{}, {} workers wanted, {} active, {} idle; queue {} (longest {}, full {} times); {} accepted, {} slow, {} restarts; up {}\n",
        status.name,
        status.phase,
        status
            .failure
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default(),
        status.target_workers,
        status.active,
        status.idle,
        status.queued,
        status.max_queued,
        status.queue_full,
        status.accepted,
        status.slow,
        status.restarts,
        drover_admin::human_duration(Duration::from_secs_f64(status.uptime_secs)),
    );
    let mut table = Table::new();
    table.load_style(presets::UTF8_FULL_CONDENSED).set_header([
        "slot",
        "pid",
        "state",
        "memory",
        "served",
        "in flight",
        "up",
        "doing",
        "slot's last exit",
    ]);
    let now_ms = status.started_at_ms + (status.uptime_secs * 1000.0) as u64;
    for w in &status.workers {
        table.add_row([
            w.index.to_string(),
            w.pid.to_string(),
            w.state.to_string(),
            w.rss
                .map(|b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
                .unwrap_or_else(|| "-".to_owned()),
            w.served.to_string(),
            w.in_flight.to_string(),
            drover_admin::human_duration(Duration::from_millis(
                now_ms.saturating_sub(w.started_at_ms),
            )),
            w.status.clone().unwrap_or_default(),
            w.last_exit.clone().unwrap_or_default(),
        ]);
    }
    for column in [0, 1, 3, 4, 5] {
        if let Some(c) = table.column_mut(column) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    out.push_str(&table.to_string());
    out.push('\n');
    out
}
