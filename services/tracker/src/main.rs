use shoal_common::{config, shutdown, telemetry};
use shoal_tracker::TrackerConfig;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = shoal_tracker::backup::command(&args).await {
        std::process::exit(code);
    }
    let cfg = config::exit_on_error(TrackerConfig::from_env());
    let telemetry = telemetry::init("shoal-tracker", "info");
    let listener = match tokio::net::TcpListener::bind(cfg.listen_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "shoal-tracker: cannot listen on {} (SHOAL_LISTEN_ADDR): {e}",
                cfg.listen_addr
            );
            std::process::exit(1);
        }
    };
    let result = shoal_tracker::run(cfg, listener, shutdown::on_signal()).await;
    telemetry.shutdown();
    if let Err(e) = result {
        eprintln!("shoal-tracker: {e:#}");
        std::process::exit(1);
    }
}
