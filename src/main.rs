//! The `switchyard` command: `serve`, `check`, `test`, `try`, `backup`,
//! `migrate`, `history`, `restore`,
//! `completions` and `manpage`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use switchyard::config::Config;
use switchyard::registry;
use switchyard::script::ScriptEngine;

// Many small allocations per request (headers, JSON, script values): mimalloc
// measured faster than the system allocator here.
// Wrapped to count bytes per thread: a script run's memory is bounded (script::memory).
#[global_allocator]
static GLOBAL: switchyard::script::memory::Counting<mimalloc::MiMalloc> =
    switchyard::script::memory::Counting(mimalloc::MiMalloc);

#[derive(Parser)]
#[command(
    name = "switchyard",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SWITCHYARD_COMMIT"), ")"),
    about = "A scriptable integration-channel runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the channels over HTTP until SIGINT or SIGTERM.
    Serve {
        /// The config, the folders, the data folder or the cluster to join (SPEC §13).
        #[command(flatten)]
        stored: Stored,
        /// Address to listen on (port 0 picks a free one).
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Write a consistent copy of the embedded store to FILE (the server may be running).
    Backup {
        /// Folder of the embedded store.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Where to write the copy (a SQLite file; restore it as DATA/switchyard.db).
        file: PathBuf,
    },
    /// Move an embedded store into a cluster: kv, files, queued events, unfinished jobs (SPEC §13).
    Migrate {
        #[command(flatten)]
        common: Common,
        /// Folder of the embedded store.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// NATS URL(s) of the cluster, comma-separated; overrides `[cluster] nats_url`.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Print the versions of a channel (or script) from the data folder or the cluster (SPEC §19).
    History {
        /// The channel code (the script code with --script).
        code: String,
        /// A script's versions, not a channel's.
        #[arg(long)]
        script: bool,
        #[command(flatten)]
        stored: Stored,
    },
    /// Restore version N of a channel (or script) without a server: written to its folder and versioned (SPEC §19).
    Restore {
        /// The channel code (the script code with --script).
        code: String,
        /// The version to bring back.
        version: u64,
        /// A script's version, not a channel's.
        #[arg(long)]
        script: bool,
        #[command(flatten)]
        stored: Stored,
    },
    /// Secrets offline (SPEC §20).
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `switchyard manpage > switchyard.1`.
    Manpage,
    /// Validate every channel document and compile every script.
    Check {
        #[command(flatten)]
        common: Common,
    },
    /// Run the script test cases offline (no server, no store changed).
    Test {
        /// A project folder (with channels/, scripts/, cases/) or the cases folder (default: ./cases).
        dir: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Dry-run one request, frame or job offline and print the answer, logs and effects.
    Try {
        /// The channel code.
        channel: String,
        /// HTTP method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The path after /channels/{code}/api.
        #[arg(long, default_value = "")]
        path: String,
        /// The query string.
        #[arg(long, default_value = "")]
        query: String,
        /// A request header, `name: value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// The request body.
        #[arg(long)]
        body: Option<String>,
        /// A websocket message frame's data (JSON) instead of an HTTP request.
        #[arg(long)]
        ws: Option<String>,
        /// A case file's case (JSON: request, frame, job or schedule, kv, stubs) instead of the flags.
        #[arg(long)]
        case: Option<PathBuf>,
        /// A draft script to run instead of the channel's.
        #[arg(long)]
        script: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Subcommand)]
enum SecretsAction {
    /// Seal every secret again under the key in FILE (made when absent); the key file then holds it.
    Rekey {
        /// The new key: 32 random bytes, base64 (a new one is written here when the file does not exist).
        #[arg(long = "new-key")]
        new_key: PathBuf,
        #[command(flatten)]
        stored: Stored,
    },
}

/// Where the offline commands find what a server keeps: the config, the
/// folders, and the data folder or the cluster.
#[derive(Args)]
struct Stored {
    #[command(flatten)]
    common: Common,
    /// Folder of the embedded store.
    #[arg(long)]
    data: Option<PathBuf>,
    /// NATS URL(s) of the cluster, comma-separated; overrides `[cluster] nats_url`.
    #[arg(long)]
    cluster: Option<String>,
}

impl Stored {
    /// The configuration, then the data folder and the cluster of the command line.
    fn load(&self) -> Result<Config, String> {
        let mut config = self.common.load()?;
        if let Some(dir) = &self.data {
            config.data = dir.clone();
        }
        if let Some(urls) = &self.cluster {
            config.cluster.nats_url = urls.clone();
        }
        Ok(config)
    }
}

#[derive(Args)]
struct Common {
    /// Configuration file (default: ./switchyard.toml when it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Folder of channel documents.
    #[arg(long)]
    channels: Option<PathBuf>,
    /// Folder of service scripts.
    #[arg(long)]
    scripts: Option<PathBuf>,
}

impl Common {
    fn load(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::load(path, true),
            None => Config::load(&PathBuf::from("switchyard.toml"), false),
        }
        .map_err(|e| e.to_string())?;
        if let Some(dir) = &self.channels {
            config.channels = dir.clone();
        }
        if let Some(dir) = &self.scripts {
            config.scripts = dir.clone();
        }
        Ok(config)
    }
}

fn file_kind(script: bool) -> registry::FileKind {
    if script {
        registry::FileKind::Script
    } else {
        registry::FileKind::Channel
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "switchyard", &mut out);
            print_all(&out)
        }
        Command::Manpage => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => print_all(&out),
                Err(e) => fail(&format!("manpage: {e}")),
            }
        }
        Command::Migrate {
            common,
            data,
            cluster,
        } => {
            let mut config = match common.load() {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            config.data = data;
            if let Some(urls) = cluster {
                config.cluster.nats_url = urls;
            }
            if config.cluster.nats_url.is_empty() {
                return fail("migrate: no cluster: give --cluster URL or [cluster] nats_url");
            }
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the runtime: {e}")),
            };
            match runtime.block_on(switchyard::migrate::migrate(&config)) {
                Ok(report) => {
                    println!("migrated {}: {report}", config.data.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::History {
            code,
            script,
            stored,
        } => {
            let config = match stored.load() {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let kind = file_kind(script);
            match offline_runtime().block_on(switchyard::restore::history(&config, kind, &code)) {
                Ok(text) => print_all(text.as_bytes()),
                Err(e) => fail(&e),
            }
        }
        Command::Restore {
            code,
            version,
            script,
            stored,
        } => {
            let config = match stored.load() {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let kind = file_kind(script);
            let run = switchyard::restore::restore(&config, kind, &code, version);
            match offline_runtime().block_on(run) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Secrets {
            action: SecretsAction::Rekey { new_key, stored },
        } => {
            let config = match stored.load() {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            match offline_runtime().block_on(switchyard::rekey::rekey(&config, &new_key)) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Backup { data, file } => match switchyard::store::backup(&data, &file) {
            Ok(()) => {
                println!(
                    "backed up {} to {}",
                    data.join("switchyard.db").display(),
                    file.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.0),
        },
        Command::Serve { stored, listen } => {
            let mut config = match stored.load() {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            if let Some(addr) = listen {
                config.listen = addr;
            }
            let logs = switchyard::telemetry::init_logs(config.log_format);
            switchyard::telemetry::init_panic_hook();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // Rhai recurses on the native stack; deep (but bounded) scripts need room.
                .thread_stack_size(8 * 1024 * 1024)
                .build();
            let result = match runtime {
                Ok(rt) => rt.block_on(switchyard::serve(config)),
                Err(e) => Err(format!("cannot start the runtime: {e}")),
            };
            // Every queued log line is written before the exit.
            drop(logs);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Test { dir, common } => {
            let folders_given = common.channels.is_some() || common.scripts.is_some();
            let config = match common.load() {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let layout =
                switchyard::dev::cases::Layout::resolve(dir.as_deref(), config, folders_given);
            match offline_runtime().block_on(switchyard::dev::cases::run_all(&layout)) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => fail(&e),
            }
        }
        Command::Try {
            channel,
            method,
            path,
            query,
            headers,
            body,
            ws,
            case,
            script,
            common,
        } => {
            let config = match common.load() {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let case = match (case, ws) {
                (Some(file), _) => match std::fs::read_to_string(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                {
                    Ok(v) => v,
                    Err(e) => return fail(&format!("{}: {e}", file.display())),
                },
                (None, Some(data)) => match serde_json::from_str::<serde_json::Value>(&data) {
                    Ok(data) => serde_json::json!({ "frame": { "data": data } }),
                    Err(e) => return fail(&format!("--ws: not JSON: {e}")),
                },
                (None, None) => {
                    let mut map = serde_json::Map::new();
                    for h in &headers {
                        let Some((k, v)) = h.split_once(':') else {
                            return fail(&format!("--header {h:?}: use `name: value`"));
                        };
                        map.insert(k.trim().to_ascii_lowercase(), v.trim().into());
                    }
                    serde_json::json!({ "request": {
                        "method": method, "path": path, "query": query,
                        "headers": map, "body": body.unwrap_or_default(),
                    }})
                }
            };
            let draft = match script.map(std::fs::read_to_string).transpose() {
                Ok(d) => d,
                Err(e) => return fail(&format!("--script: {e}")),
            };
            let run = switchyard::dev::cases::try_one(&config, &channel, &case, draft.as_deref());
            match offline_runtime().block_on(run) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Check { common } => {
            let config = match common.load() {
                Ok(c) => c,
                Err(e) => return fail(&e),
            };
            let engine = ScriptEngine::new();
            let loaded = registry::load(&config, &engine, None);
            let (snapshot, mut problems) = (loaded.snapshot, loaded.problems);
            let (errors, warnings) = switchyard::authoring::review(&snapshot, &engine);
            problems.extend(errors);
            for p in &problems {
                println!("{p}");
            }
            // Warnings go to stderr: stdout stays one line per problem.
            for w in &warnings {
                eprintln!(
                    "{}:{}:{}: warning: {}",
                    w.file.display(),
                    w.line,
                    w.col,
                    w.message
                );
            }
            eprintln!(
                "{} channel(s), {} script(s), {} problem(s), {} warning(s)",
                snapshot.channels.len(),
                snapshot.scripts.len(),
                problems.len(),
                warnings.len()
            );
            if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A small runtime for the offline commands (scripts run on its blocking threads).
fn offline_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_stack_size(8 * 1024 * 1024)
        .build()
        .expect("a runtime")
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is no error.
fn print_all(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(bytes);
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    eprintln!("switchyard: {message}");
    ExitCode::FAILURE
}
