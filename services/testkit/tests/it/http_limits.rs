//! HTTP limits (issue 15): a client that never finishes its request headers
//! (slowloris) is disconnected after the header-read timeout, while other downloads
//! proceed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_testkit::{ClusterOptions, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_disconnected_while_downloads_proceed() {
    let mut o = ClusterOptions::zones(&["a", "b"]).replication(2);
    o.webserver = true;
    o.webserver_tweak = |w| w.http_header_timeout = Duration::from_secs(1);
    let c = TestCluster::start(o).await.expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f.bin");
    shoal_testkit::random_file(&src, 300_000, 9).expect("file");
    let opts = shoal_client::PutOptions {
        name: "f.bin".into(),
        ..Default::default()
    };
    c.client()
        .put(&src, opts, Arc::new(shoal_client::Quiet))
        .await
        .expect("put");
    let http = c.webserver.as_ref().expect("webserver").http;

    // The slow client: a request line and one header line every 200 ms, never the end.
    let mut slow = tokio::net::TcpStream::connect(http).await.expect("connect");
    slow.write_all(b"GET /download/f.bin HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let trickle = async {
        let mut buf = [0u8; 1024];
        loop {
            tokio::select! {
                r = slow.read(&mut buf) => match r {
                    // Closed (hyper may answer 408 first): disconnected.
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(_) => {}
                },
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if slow.write_all(b"X-Slow: 1\r\n").await.is_err() {
                        return started.elapsed();
                    }
                }
            }
        }
    };
    let web = reqwest::Client::new();
    let download = async {
        let body = web
            .get(format!("http://{http}/download/f.bin"))
            .send()
            .await
            .expect("download")
            .bytes()
            .await
            .expect("body");
        assert_eq!(body.len(), 300_000, "a normal download proceeds");
    };
    let (cut, ()) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(10), trickle)
                .await
                .expect("the slow client is disconnected within 10 s")
        },
        download
    );
    assert!(
        cut >= Duration::from_millis(900),
        "not before the header timeout: {cut:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_past_the_cap_get_503_with_retry_after() {
    let mut o = ClusterOptions::zones(&["a"]).replication(1);
    o.webserver = true;
    o.webserver_tweak = |w| w.max_downloads = 1;
    let c = TestCluster::start(o).await.expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big.bin");
    // Larger than the socket and HTTP buffers: an unread download stays in flight.
    shoal_testkit::random_file(&src, 32 << 20, 11).expect("file");
    let opts = shoal_client::PutOptions {
        name: "big.bin".into(),
        ..Default::default()
    };
    c.client()
        .put(&src, opts, Arc::new(shoal_client::Quiet))
        .await
        .expect("put");
    let http = c.webserver.as_ref().expect("webserver").http;
    let url = format!("http://{http}/download/big.bin");
    let first = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .expect("first");
    assert_eq!(first.status(), 200);
    let second = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .expect("second");
    assert_eq!(second.status(), 503, "the cap is one download");
    assert!(second.headers().contains_key("retry-after"));
    // The first download completes in full; then the slot is free again.
    let body = first.bytes().await.expect("body");
    assert_eq!(body.len(), 32 << 20);
    shoal_testkit::wait_for("the slot freed", Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .head(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await
    .expect("a download after the first is served");
}

/// An HTTP body that stops moving gives its slot back after `SHOAL_HTTP_BODY_TIMEOUT`:
/// a download nobody reads (one slot, so the next download shows it) and an upload
/// whose body stalls (one slot; the stalled client reads 408 or a closed connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_give_their_slots_back_after_the_body_timeout() {
    let mut o = ClusterOptions::zones(&["a"]).replication(1);
    o.webserver = true;
    o.webserver_tweak = |w| {
        w.max_downloads = 1;
        w.max_uploads = 1;
        w.http_body_timeout = Duration::from_secs(1);
    };
    let c = TestCluster::start(o).await.expect("cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big.bin");
    // Larger than the socket and HTTP buffers: an unread download stays in flight.
    shoal_testkit::random_file(&src, 32 << 20, 12).expect("file");
    let opts = shoal_client::PutOptions {
        name: "big.bin".into(),
        ..Default::default()
    };
    c.client()
        .put(&src, opts, Arc::new(shoal_client::Quiet))
        .await
        .expect("put");
    let http = c.webserver.as_ref().expect("webserver").http;
    let web = reqwest::Client::new();

    // The unread download: the request, then never a byte read.
    let mut unread = tokio::net::TcpStream::connect(http).await.expect("connect");
    unread
        .write_all(b"GET /download/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let url = format!("http://{http}/download/big.bin");
    // The unread download holds the one slot first (a HEAD answered before the server
    // took the GET would find the slot free and end the wait below at once).
    shoal_testkit::wait_for(
        "the unread download takes the slot",
        Duration::from_secs(20),
        || {
            let (web, url) = (web.clone(), url.clone());
            async move { web.head(&url).send().await.is_ok_and(|r| r.status() == 503) }
        },
    )
    .await
    .expect("the unread download takes the slot");
    shoal_testkit::wait_for("the download slot", Duration::from_secs(20), || {
        let (web, url) = (web.clone(), url.clone());
        async move { web.head(&url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await
    .expect("the unread download's slot is given back");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the body timeout: {:?}",
        started.elapsed()
    );
    drop(unread);

    // The stalled upload: a multipart head and part of the file, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(http).await.expect("connect");
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\n\
        Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n\
        --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.bin\"\r\n\r\n";
    stalled.write_all(head.as_bytes()).await.expect("write");
    stalled.write_all(&[7u8; 1000]).await.expect("write");
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut answer))
        .await
        .expect("the stalled upload is ended within 20 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the body timeout: {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        read.is_err() || answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // Its slot is free: a whole upload goes through.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![1u8; 1000]).file_name("ok.bin"),
    );
    let r = web
        .post(format!("http://{http}/upload"))
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert!(
        r.status().is_success() || r.status().is_redirection(),
        "{}",
        r.status()
    );
}
