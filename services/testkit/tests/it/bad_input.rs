//! The bad-input table: malformed, hostile or out-of-range input to the tracker, the
//! peers, the webserver (gRPC and HTTP), the CLI and the services' configuration, each
//! row with the gRPC code, HTTP status or exit code it must get. The rows run in order
//! against one cluster with auth on; after every row, every file put at the start must
//! still be listed and download byte-identical.
//!
//! Needs the binaries (`cargo build --workspace --bins`; `make test` does).

mod cli;
mod config;
mod harness;
mod peer;
mod raw;
mod tracker;
mod web;

use std::sync::Arc;
use std::time::Duration;

use harness::{Case, Ctx};

/// Longest one row may take (the upload-expiry row waits a few seconds on purpose).
const ROW_LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_table() {
    let ctx = Arc::new(Ctx::start().await);
    ctx.check_files()
        .await
        .expect("the files are intact before any bad input");

    let cases: Vec<Case> = [
        tracker::cases(),
        peer::cases(),
        web::cases(),
        cli::cases(),
        config::cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert!(cases.len() >= 50, "the table has only {} rows", cases.len());
    // BAD_INPUT_ONLY=text runs only the rows whose name contains it (while debugging).
    let only = std::env::var("BAD_INPUT_ONLY").unwrap_or_default();
    let cases: Vec<Case> = cases
        .into_iter()
        .filter(|c| c.name.contains(&only))
        .collect();

    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let started = std::time::Instant::now();
        let actual = match tokio::time::timeout(ROW_LIMIT, (c.run)(ctx.clone())).await {
            Ok(Ok(outcome)) if outcome == c.expect => Ok(()),
            Ok(Ok(outcome)) => Err(format!("expected {}, got {outcome}", c.expect)),
            Ok(Err(why)) => Err(format!("expected {}, but {why}", c.expect)),
            Err(_) => Err(format!("expected {}, no answer in {ROW_LIMIT:?}", c.expect)),
        };
        // Whatever the row did, the cluster still serves every file it had.
        let intact = ctx
            .check_files()
            .await
            .map_err(|e| format!("after this row, {e}"));
        let verdict = actual.and(intact);
        println!(
            "{:>3} {} {} ({} ms)",
            i + 1,
            if verdict.is_ok() { "ok  " } else { "FAIL" },
            c.name,
            started.elapsed().as_millis()
        );
        if let Err(e) = verdict {
            failures.push(format!("{}: {e}", c.name));
        }
    }

    let (failed, passed) = (failures.len(), cases.len() - failures.len());
    for f in &failures {
        println!("FAILED {f}");
    }
    println!("{passed} passed, {failed} failed");
    assert!(
        failures.is_empty(),
        "{failed} of {} bad-input rows failed:\n{}",
        cases.len(),
        failures.join("\n")
    );
}
