//! Mutual TLS between every service and client, with certificates made in the test.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use shoal_client::{Client, PutOptions, Quiet};
use shoal_common::tls::TlsConfig;
use shoal_testkit::{file_hash, random_file, ClusterOptions, TestCluster};

fn write(dir: &std::path::Path, name: &str, pem: String) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, pem).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let tls = TlsConfig {
        cert_file: Some(write(dir.path(), "node.pem", cert.pem())),
        key_file: Some(write(dir.path(), "node.key", key.serialize_pem())),
        ca_file: Some(write(dir.path(), "ca.pem", ca.pem())),
    };
    // This process (harness and test client) dials with TLS and presents the certificate.
    shoal_common::tls::set_client(tls.client().unwrap().unwrap());
    let mut o = ClusterOptions::zones(&["a", "b"]).replication(2);
    o.tls = tls;
    o.webserver = true;
    let cluster = TestCluster::start(o).await.unwrap();
    assert!(cluster.tracker_url().starts_with("https://"));

    let c = cluster.client();
    let src = dir.path().join("f");
    random_file(&src, 300_000, 1).unwrap();
    c.put(
        &src,
        PutOptions {
            name: "f".into(),
            ..Default::default()
        },
        Arc::new(Quiet),
    )
    .await
    .unwrap();
    let out = dir.path().join("out");
    c.get("f", &out, Arc::new(Quiet)).await.unwrap();
    assert_eq!(file_hash(&out).unwrap(), file_hash(&src).unwrap());

    // The webserver: gRPC Discover over TLS, and HTTPS for the web UI and downloads.
    let web = cluster.webserver.as_ref().unwrap();
    let (thin, _) = Client::discover(&format!("https://{}", web.node.addr))
        .await
        .unwrap();
    assert_eq!(thin.list().await.unwrap().len(), 1);
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let body = https
        .get(format!("https://127.0.0.1:{}/download/f", web.http.port()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        blake3::hash(&body).to_hex().to_string(),
        file_hash(&src).unwrap()
    );
    assert!(
        reqwest::Client::new()
            .get(format!("http://{}/healthz", web.http))
            .send()
            .await
            .is_err(),
        "plain HTTP to the HTTPS port must fail"
    );

    // Plain HTTP/2 to a TLS port fails.
    let plain = Client::new(&format!("http://{}", cluster.tracker_addr)).unwrap();
    assert!(plain.list().await.is_err());
}
