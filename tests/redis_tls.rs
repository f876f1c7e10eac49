//! Redis over TLS (`rediss://`): a Redis serving TLS only, with certificates made here by
//! `openssl` (a CA of the test's own and a server certificate for 127.0.0.1). Switchboard trusts
//! the system's store, or the CA file in `SSL_CERT_FILE`; without the CA it refuses the server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A TLS-only `redis-server` of this test's own, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`), and a server and a client certificate it signed (`server.pem`, `server.key`,
/// `client.pem`, `client.key`).
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=switchboard test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    signed(
        dir,
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1",
    );
    // A client certificate the CA signed, for a server that asks for one.
    signed(
        dir,
        "client",
        "/CN=switchboard",
        "extendedKeyUsage=clientAuth",
    );
}

/// A key (`<name>.key`) and a certificate for it the CA signed (`<name>.pem`), with one X.509
/// extension (which also makes it a v3 certificate: rustls refuses v1 ones).
fn signed(dir: &Path, name: &str, subject: &str, extension: &str) {
    let (key, csr, ext, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.pem"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out", &csr,
        ],
    );
    std::fs::write(dir.join(&ext), format!("{extension}\n")).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ],
    );
}

fn tls_server() -> Server {
    server_asking_clients(false)
}

/// A TLS-only server; with `mutual`, one that refuses clients without a certificate its CA
/// signed (`tls-auth-clients yes`).
fn server_asking_clients(mutual: bool) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("sb-tls-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
        ])
        .args([
            "--tls-ca-cert-file",
            "ca.pem",
            "--tls-auth-clients",
            if mutual { "yes" } else { "no" },
            "--save",
            "",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (deploy/local/redis install)");
    let server = Server { child, port, dir };
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the TLS Redis did not listen"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// `switchboard directory load` of the example directory into the TLS Redis.
fn load_directory(server: &Server, ca: Option<&Path>) -> std::process::Output {
    load_directory_with(server, ca, &[])
}

fn load_directory_with(
    server: &Server,
    ca: Option<&Path>,
    settings: &[(&str, PathBuf)],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args([
        "directory",
        "load",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/directory.yaml"),
    ])
    .env(
        "SWITCHBOARD_REDIS__URL",
        format!("rediss://127.0.0.1:{}/", server.port),
    )
    .env("SWITCHBOARD_REDIS__KEY_PREFIX", "sbtls")
    .env_remove("SSL_CERT_DIR")
    .envs(settings.iter().map(|(k, v)| (*k, v)));
    match ca {
        Some(ca) => cmd.env("SSL_CERT_FILE", ca),
        None => cmd.env_remove("SSL_CERT_FILE"),
    };
    cmd.output().unwrap()
}

#[test]
fn rediss_works_with_the_servers_ca_and_refuses_a_server_it_cannot_verify() {
    let server = tls_server();
    let refused = load_directory(&server, None);
    assert!(
        !refused.status.success(),
        "a server signed by an unknown CA was trusted"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    let ca = server.dir.join("ca.pem");
    let loaded = load_directory(&server, Some(&ca));
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    // Read back over TLS with the redis crate itself: the directory is there.
    let client = redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{}/", server.port),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&ca).unwrap()),
        },
    )
    .unwrap();
    let mut conn = client.get_connection().unwrap();
    let version: Option<String> = redis::cmd("GET")
        .arg("sbtls:{dir}:version")
        .query(&mut conn)
        .unwrap();
    assert!(version.is_some(), "the directory's version key over TLS");
}

/// `redis.tls_ca_file`, `redis.tls_cert_file` and `redis.tls_key_file` against a server that
/// asks clients for a certificate: with them the load works, without the certificate it is
/// refused, and the CA setting alone is trusted without `SSL_CERT_FILE`.
#[test]
fn a_client_certificate_from_the_settings_is_presented() {
    let server = server_asking_clients(true);
    let file = |name: &str| server.dir.join(name);
    let ca_only = [("SWITCHBOARD_REDIS__TLS_CA_FILE", file("ca.pem"))];
    let refused = load_directory_with(&server, None, &ca_only);
    assert!(
        !refused.status.success(),
        "a server asking for a client certificate accepted none"
    );
    let with_certificate = [
        ("SWITCHBOARD_REDIS__TLS_CA_FILE", file("ca.pem")),
        ("SWITCHBOARD_REDIS__TLS_CERT_FILE", file("client.pem")),
        ("SWITCHBOARD_REDIS__TLS_KEY_FILE", file("client.key")),
    ];
    let loaded = load_directory_with(&server, None, &with_certificate);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    // A certificate without its key is a configuration error, before any connection.
    let half = [("SWITCHBOARD_REDIS__TLS_CERT_FILE", file("client.pem"))];
    let out = load_directory_with(&server, None, &half);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("redis.tls_cert_file"));
}
