//! Bad input to the `shoal` CLI: exit codes, one line on stderr, and names from the
//! network that try to leave the current directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_client::{PutOptions, Quiet};

use super::harness::{
    case, files_under, no_panic, one_line, run_bin, Answer, Case, Ctx, Outcome, READ, WRITE,
};

/// `shoal --tracker URL --token TOKEN ARGS…` in `cwd`.
async fn shoal(
    c: &Ctx,
    token: &str,
    args: &[&str],
    cwd: Option<PathBuf>,
) -> Result<super::harness::Ran, String> {
    let mut all = vec![
        "--tracker".to_string(),
        c.cluster.tracker_url(),
        "--token".to_string(),
        token.to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    run_bin("shoal", all, vec![], cwd, Duration::from_secs(60)).await
}

/// Exit code, with stderr exactly one line.
async fn exit(c: &Ctx, token: &str, args: &[&str]) -> Answer {
    let r = shoal(c, token, args, None).await?;
    one_line(&r.stderr)?;
    Ok(Outcome::Exit(r.code))
}

/// A small local file to put.
fn src(c: &Ctx) -> PathBuf {
    let p = c.dir("cli").join("src.txt");
    std::fs::write(&p, b"cli source").expect("write");
    p
}

/// Put `content` under `name` (write token), then `shoal get NAME` without `-o` in a
/// fresh directory nested two levels deep: exactly `expect` is written, inside it.
async fn get_into_cwd(c: &Ctx, name: &str, content: &[u8], expect: Option<&str>) -> Answer {
    let root = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cwd = root.path().join("x").join("y");
    std::fs::create_dir_all(&cwd).map_err(|e| e.to_string())?;
    let local = root.path().join("content");
    std::fs::write(&local, content).map_err(|e| e.to_string())?;
    let put = shoal_client::Client::with_token(&c.cluster.tracker_url(), Some(WRITE.into()))
        .map_err(|e| e.to_string())?
        .put(
            &local,
            PutOptions {
                name: name.into(),
                overwrite: true,
                ..Default::default()
            },
            Arc::new(Quiet),
        )
        .await
        .map_err(|e| format!("put {name:?}: {e}"))?;
    std::fs::remove_file(&local).map_err(|e| e.to_string())?;
    let r = shoal(c, READ, &["get", name], Some(cwd.clone())).await?;
    no_panic(&r.stderr)?;
    let written = files_under(root.path());
    let want_name = expect.map(str::to_string).unwrap_or(put.id);
    let want = vec![format!("x/y/{want_name}")];
    if written != want {
        return Err(format!("get {name:?} wrote {written:?}, want {want:?}"));
    }
    let got = std::fs::read(cwd.join(&want_name)).map_err(|e| e.to_string())?;
    if got != content {
        return Err("the downloaded file differs".into());
    }
    Ok(Outcome::Exit(r.code))
}

pub fn cases() -> Vec<Case> {
    vec![
        case("CLI get: unknown name", Outcome::Exit(3), |c| async move {
            exit(&c, READ, &["get", "no-such-file", "-o", "/dev/null"]).await
        }),
        case(
            "CLI stat: unknown file id",
            Outcome::Exit(3),
            |c| async move {
                let id = blake3::hash(b"cli nothing").to_hex().to_string();
                exit(&c, READ, &["stat", &id]).await
            },
        ),
        case(
            "CLI: progress timeout of 0s",
            Outcome::Exit(2),
            |c| async move { exit(&c, READ, &["--progress-timeout", "0s", "ls"]).await },
        ),
        case("CLI rm: unknown name", Outcome::Exit(3), |c| async move {
            exit(&c, WRITE, &["rm", "no-such-file"]).await
        }),
        case("CLI put: empty name", Outcome::Exit(2), |c| async move {
            let p = src(&c);
            exit(
                &c,
                WRITE,
                &["put", p.to_str().expect("utf-8"), "--name", ""],
            )
            .await
        }),
        case("CLI put: 10 KB name", Outcome::Exit(2), |c| async move {
            let p = src(&c);
            let name = "n".repeat(10 << 10);
            exit(
                &c,
                WRITE,
                &["put", p.to_str().expect("utf-8"), "--name", &name],
            )
            .await
        }),
        case(
            "CLI put: newline in the name",
            Outcome::Exit(2),
            |c| async move {
                let p = src(&c);
                exit(
                    &c,
                    WRITE,
                    &["put", p.to_str().expect("utf-8"), "--name", "a\nb"],
                )
                .await
            },
        ),
        case("CLI put: 1000 replicas", Outcome::Exit(2), |c| async move {
            let p = src(&c);
            exit(
                &c,
                WRITE,
                &[
                    "put",
                    p.to_str().expect("utf-8"),
                    "--name",
                    "r1000",
                    "--replicas",
                    "1000",
                ],
            )
            .await
        }),
        case(
            "CLI put: an existing name, other content",
            Outcome::Exit(4),
            |c| async move {
                let p = src(&c);
                exit(
                    &c,
                    WRITE,
                    &["put", p.to_str().expect("utf-8"), "--name", "small.txt"],
                )
                .await
            },
        ),
        case(
            "CLI put: missing local file",
            Outcome::Exit(1),
            |c| async move { exit(&c, WRITE, &["put", "/nonexistent/shoal/file"]).await },
        ),
        case("CLI replicas: 0", Outcome::Exit(2), |c| async move {
            exit(&c, WRITE, &["replicas", "small.txt", "0"]).await
        }),
        case("CLI replicas: 1000", Outcome::Exit(2), |c| async move {
            exit(&c, WRITE, &["replicas", "small.txt", "1000"]).await
        }),
        case(
            "CLI search: 10 KB query",
            Outcome::Exit(2),
            |c| async move { exit(&c, READ, &["search", &"q".repeat(10 << 10)]).await },
        ),
        case("CLI ls: wrong token", Outcome::Exit(7), |c| async move {
            exit(&c, "not-the-token-0123456789", &["ls"]).await
        }),
        case("CLI rm: read token", Outcome::Exit(7), |c| async move {
            exit(&c, READ, &["rm", "small.txt"]).await
        }),
        case(
            "CLI ls: tracker not listening",
            Outcome::Exit(6),
            |_c| async move {
                let r = run_bin(
                    "shoal",
                    vec!["--tracker".into(), "http://127.0.0.1:1".into(), "ls".into()],
                    vec![],
                    None,
                    Duration::from_secs(60),
                )
                .await?;
                one_line(&r.stderr)?;
                Ok(Outcome::Exit(r.code))
            },
        ),
        case(
            "CLI ls: malformed tracker URL",
            Outcome::Exit(2),
            |_c| async move {
                let r = run_bin(
                    "shoal",
                    vec!["--tracker".into(), "http://[::1".into(), "ls".into()],
                    vec![],
                    None,
                    Duration::from_secs(60),
                )
                .await?;
                one_line(&r.stderr)?;
                Ok(Outcome::Exit(r.code))
            },
        ),
        case(
            "CLI: unknown subcommand",
            Outcome::Exit(2),
            |c| async move {
                let r = shoal(&c, READ, &["frobnicate"], None).await?;
                no_panic(&r.stderr)?;
                Ok(Outcome::Exit(r.code))
            },
        ),
        case("CLI replicas: -1", Outcome::Exit(2), |c| async move {
            let r = shoal(&c, WRITE, &["replicas", "small.txt", "-1"], None).await?;
            no_panic(&r.stderr)?;
            Ok(Outcome::Exit(r.code))
        }),
        case(
            "CLI get: name ../../etc/passwd writes only ./passwd",
            Outcome::Exit(0),
            |c| async move {
                get_into_cwd(&c, "../../etc/passwd", b"not your passwd\n", Some("passwd")).await
            },
        ),
        case(
            r"CLI get: name ..\..\evil writes only ./evil",
            Outcome::Exit(0),
            |c| async move { get_into_cwd(&c, r"..\..\evil", b"backslashes\n", Some("evil")).await },
        ),
        case(
            "CLI get: name .. writes the file id",
            Outcome::Exit(0),
            |c| async move { get_into_cwd(&c, "..", b"dot dot\n", None).await },
        ),
        case(
            "CLI get: name dir/ writes the file id",
            Outcome::Exit(0),
            |c| async move { get_into_cwd(&c, "dir/", b"a directory name\n", None).await },
        ),
    ]
}
