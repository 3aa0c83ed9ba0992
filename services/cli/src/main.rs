//! `shoal`: put, get, list, search, stat, remove files; list, drain and undrain peers.
//! Human tables by default, `--json` for scripts. Errors: one line on stderr and an
//! exit code (3 not found, 4 already exists, 5 verification failed, 6 unavailable,
//! 7 no or wrong token, or a role too low; 1 anything else; 2 for bad usage).

mod output;
mod trace;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use shoal_client::{Client, ClientError, PutOptions};

const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";
const DEFAULT_TRACKER: &str = "http://127.0.0.1:50052";

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Peer-to-peer file sharing: put, get, search, replicate"
)]
struct Cli {
    /// The webserver to ask where the tracker is.
    #[arg(long, global = true, env = "SHOAL_ENDPOINT")]
    endpoint: Option<String>,
    /// Tracker URL(s), comma-separated; skips discovery.
    #[arg(long, global = true, env = "SHOAL_TRACKER")]
    tracker: Option<String>,
    /// Bearer token (read or write role) when the cluster requires one.
    #[arg(long, global = true, env = "SHOAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to verify servers with; turns on TLS (https://).
    #[arg(long, global = true, env = "SHOAL_TLS__CA_FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for clusters that require mutual TLS.
    #[arg(long, global = true, env = "SHOAL_TLS__CERT_FILE")]
    tls_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, global = true, env = "SHOAL_TLS__KEY_FILE")]
    tls_key: Option<PathBuf>,
    /// A chunk transfer that moves no byte for this long is abandoned and its peer
    /// avoided for the rest of the get or put (e.g. 10s, 500ms).
    #[arg(
        long,
        global = true,
        env = "SHOAL_PROGRESS_TIMEOUT",
        default_value = "10s"
    )]
    progress_timeout: String,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// How much of a listing to fetch, and in pages of what size.
#[derive(clap::Args)]
struct Paging {
    /// Stop after N names (default: all of them).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Names per request to the tracker (0: its default, 1,000; it serves at most 10,000).
    #[arg(long, value_name = "N", default_value_t = 0)]
    page_size: u32,
}

#[derive(Subcommand)]
enum Cmd {
    /// Upload a file; prints its id.
    Put {
        path: PathBuf,
        /// Name in the catalogue (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// Copies to keep (default: the cluster's).
        #[arg(long, default_value_t = 0)]
        replicas: u32,
        /// Replace a different file of the same name.
        #[arg(long)]
        overwrite: bool,
    },
    /// Download a file by name or id, verified; resumes an interrupted download.
    Get {
        name_or_id: String,
        /// Output path (default: the file's name in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Write the file with O_DIRECT where the filesystem allows, past the page
        /// cache (by default it is written through the cache, as curl or wget would).
        #[arg(long, env = "SHOAL_GET_DIRECT")]
        direct: bool,
        /// Through the page cache: the default (kept for scripts that asked for it).
        #[arg(long, hide = true, conflicts_with = "direct")]
        cached: bool,
    },
    /// List files, in byte order of their names (every one, fetched a page at a time).
    Ls {
        #[command(flatten)]
        paging: Paging,
    },
    /// Files whose name contains QUERY (case-insensitive), in byte order.
    Search {
        query: String,
        #[command(flatten)]
        paging: Paging,
    },
    /// A file's chunks and where each copy lives.
    Stat { name_or_id: String },
    /// Remove a name (or every name of an id); unreferenced chunks are deleted.
    Rm { name_or_id: String },
    /// Peers, or drain one.
    Peers {
        #[command(subcommand)]
        action: Option<PeersCmd>,
    },
    /// Change a file's replica count; the tracker converges.
    Replicas { name_or_id: String, replicas: u32 },
    /// Cluster facts: peers, zones, under-replicated and lost chunks.
    Info,
    /// The span tree of the latest put (and repairs) of a file, from the trace sink's file.
    Trace {
        name: String,
        /// JSON lines written by shoal-trace-sink.
        #[arg(long, env = "SHOAL_TRACE_FILE", default_value = ".shoal/traces.jsonl")]
        file: PathBuf,
    },
    /// Exit 0 when the gRPC server at ADDR reports SERVING (for container health checks).
    Health {
        addr: String,
        #[arg(long, default_value = "")]
        service: String,
    },
}

#[derive(Subcommand)]
enum PeersCmd {
    /// Move every chunk off a peer; reports when it is safe to remove.
    Drain { peer_id: String },
    /// Stop draining a peer: it counts and takes copies again.
    Undrain { peer_id: String },
}

fn exit_code(e: &ClientError) -> i32 {
    use tonic::Code;
    match e {
        ClientError::Rpc {
            code: Code::NotFound,
            ..
        } => 3,
        ClientError::Rpc {
            code: Code::AlreadyExists,
            ..
        } => 4,
        ClientError::Verify(_)
        | ClientError::Rpc {
            code: Code::DataLoss,
            ..
        } => 5,
        ClientError::Rpc {
            code: Code::Unavailable | Code::DeadlineExceeded,
            ..
        } => 6,
        ClientError::Rpc {
            code: Code::InvalidArgument,
            ..
        } => 2,
        ClientError::Rpc {
            code: Code::Unauthenticated | Code::PermissionDenied,
            ..
        } => 7,
        _ => 1,
    }
}

/// A transfer progress deadline: a duration between 10 ms and 1 hour.
fn progress_timeout(s: &str) -> Result<std::time::Duration, String> {
    let t = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if t < std::time::Duration::from_millis(10) || t > std::time::Duration::from_secs(3600) {
        return Err("must be between 10ms and 1h".into());
    }
    Ok(t)
}

async fn connect(cli: &Cli) -> Result<Client, ClientError> {
    let mut client = connect_to(cli).await?;
    // Checked in `main` already.
    client.options.progress_timeout =
        progress_timeout(&cli.progress_timeout).map_err(ClientError::Other)?;
    Ok(client)
}

async fn connect_to(cli: &Cli) -> Result<Client, ClientError> {
    let token = cli.token.clone();
    if let Some(t) = &cli.tracker {
        return Client::with_token(t, token);
    }
    match &cli.endpoint {
        Some(e) => Ok(Client::discover_with_token(e, token).await?.0),
        // No endpoint configured: the local webserver, else the local tracker.
        None => match Client::discover_with_token(DEFAULT_ENDPOINT, token.clone()).await {
            Ok((c, _)) => Ok(c),
            Err(e) if e.code() == Some(tonic::Code::Unavailable) => {
                Client::with_token(DEFAULT_TRACKER, token)
            }
            Err(e) => Err(e),
        },
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = progress_timeout(&cli.progress_timeout) {
        // One line, like every other bad input (clap's own errors are several).
        eprintln!("shoal: --progress-timeout {:?}: {e}", cli.progress_timeout);
        std::process::exit(2);
    }
    let telemetry = shoal_common::telemetry::init("shoal-cli", "warn");
    let code = match run(&cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal: {e}");
            exit_code(&e)
        }
    };
    // Flush the last spans: `exit` skips destructors.
    telemetry.shutdown();
    std::process::exit(code);
}

async fn run(cli: &Cli) -> Result<i32, ClientError> {
    let json = cli.json;
    let tls = shoal_common::tls::TlsConfig {
        cert_file: cli.tls_cert.clone(),
        key_file: cli.tls_key.clone(),
        ca_file: cli.tls_ca.clone(),
    };
    if let Some(c) = tls
        .client()
        .map_err(|e| ClientError::Other(e.to_string()))?
    {
        shoal_common::tls::set_client(c);
    }
    if let Cmd::Health { addr, service } = &cli.cmd {
        return Ok(
            match shoal_common::grpc::check_health(addr, service).await {
                Ok(true) => {
                    println!("SERVING");
                    0
                }
                Ok(false) => {
                    eprintln!("shoal: {addr} is NOT_SERVING");
                    1
                }
                Err(e) => {
                    eprintln!("shoal: health check of {addr} failed: {}", e.message());
                    1
                }
            },
        );
    }
    if let Cmd::Trace { name, file } = &cli.cmd {
        // The file's chunks, to find its repairs; the put tree needs no tracker.
        let chunks = match connect(cli).await {
            Ok(c) => c
                .stat(name)
                .await
                .map(|d| d.chunks.into_iter().map(|c| c.hash).collect())
                .unwrap_or_default(),
            Err(_) => Default::default(),
        };
        return match trace::render(file, name, &chunks) {
            Ok(text) => {
                print!("{text}");
                Ok(0)
            }
            Err(e) => Err(ClientError::Other(e)),
        };
    }
    let mut client = connect(cli).await?;
    let bars = !json && std::io::stderr().is_terminal();
    match &cli.cmd {
        Cmd::Put {
            path,
            name,
            replicas,
            overwrite,
        } => {
            let name = match name {
                Some(n) => n.clone(),
                None => path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ClientError::Other(format!("{}: give a --name", path.display()))
                    })?,
            };
            let opts = PutOptions {
                name,
                replicas: *replicas,
                overwrite: *overwrite,
            };
            let r = client.put(path, opts, output::progress(bars)).await?;
            output::put(&r, json);
        }
        Cmd::Get {
            name_or_id,
            output: out,
            direct,
            cached: _,
        } => {
            client.options.direct_output = *direct;
            let detail = client.stat(name_or_id).await?;
            let summary = detail
                .summary
                .clone()
                .ok_or_else(|| ClientError::Other("tracker sent no summary".into()))?;
            // A name from the network becomes at most a plain file name here.
            let out = match out {
                Some(p) => p.clone(),
                None => PathBuf::from(
                    shoal_common::names::local_file_name(&summary.name)
                        .unwrap_or_else(|| summary.id.clone()),
                ),
            };
            let r = client
                .get_detail(&detail, &out, output::progress(bars))
                .await?;
            output::get(&r, json);
        }
        Cmd::Ls { paging } => output::files(
            &client.files(None, paging.limit, paging.page_size).await?,
            json,
        ),
        Cmd::Search { query, paging } => output::files(
            &client
                .files(Some(query), paging.limit, paging.page_size)
                .await?,
            json,
        ),
        Cmd::Stat { name_or_id } => output::stat(&client.stat(name_or_id).await?, json),
        Cmd::Rm { name_or_id } => {
            let r = client.delete(name_or_id).await?;
            output::rm(&r, json);
        }
        Cmd::Peers { action: None } => output::peers(&client.peers().await?, json),
        Cmd::Peers {
            action: Some(PeersCmd::Drain { peer_id }),
        } => output::drain(peer_id, &client.drain(peer_id).await?, json),
        Cmd::Peers {
            action: Some(PeersCmd::Undrain { peer_id }),
        } => {
            let id = peer_id.clone();
            let r = client
                .trackers
                .call(&format!("undrain {peer_id}"), |mut c| {
                    let peer_id = id.clone();
                    async move {
                        c.undrain_peer(shoal_proto::v1::UndrainPeerRequest { peer_id })
                            .await
                    }
                })
                .await?;
            output::drain(peer_id, &r, json)
        }
        Cmd::Replicas {
            name_or_id,
            replicas,
        } => {
            let r = client.set_replicas(name_or_id, *replicas).await?;
            if let Some(f) = r.file {
                output::files(&[f], json);
            }
        }
        Cmd::Info => output::info(&client.cluster_info().await?, json),
        Cmd::Health { .. } | Cmd::Trace { .. } => unreachable!("handled above"),
    }
    Ok(0)
}
