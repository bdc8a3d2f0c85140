//! Third-party peers for the interoperability tests: nginx and HAProxy as upstreams (run
//! in the foreground from a temporary directory), curl, h2load and openssl as tools, the
//! certificates they serve, and the in-process recording server behind them.

#![allow(dead_code)] // each test uses its own part

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long a peer may take to open all its ports.
const STARTUP: Duration = Duration::from_secs(15);

/// The Debian package that provides a peer binary.
fn package(name: &str) -> &'static str {
    match name {
        "nginx" => "nginx-light",
        "haproxy" => "haproxy",
        "h2load" => "nghttp2-client",
        "curl" => "curl",
        "openssl" => "openssl",
        _ => "?",
    }
}

/// Where `name` is installed: `PATH`, then the sbin directories (nginx and haproxy live in
/// /usr/sbin, which a non-root `PATH` may lack).
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The peer binary `name`, or `None` (and a note on stdout) when it is not installed, so
/// the test returns early. Under CI (`CI=true`) a missing peer fails the test instead.
pub fn require(name: &str) -> Option<PathBuf> {
    if let Some(found) = find(name) {
        return Some(found);
    }
    let install = format!("apt-get install {}", package(name));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{name} is not installed, and CI=true makes a missing peer a failure ({install})");
    }
    println!("skipped: {name} is not installed ({install})");
    None
}

// ---------------------------------------------------------------------------------------
// The recording backend
// ---------------------------------------------------------------------------------------

/// One request as the backend received it. No `Debug`: it holds the bearer tokens.
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Every `authorization` value, in order.
    pub authorization: Vec<Vec<u8>>,
    /// `x-peer-protocol`: the protocol the peer (nginx, HAProxy) received the request in, as
    /// the peer set it (`HTTP/1.1`, `HTTP/2.0`).
    pub peer_protocol: String,
    pub body_len: usize,
    pub body_sha256: Vec<u8>,
    /// Set when the body broke off.
    pub body_error: Option<String>,
}

/// An HTTP/1.1 and HTTP/2 server on 127.0.0.1 that records every request and answers 200
/// with `ok <body length>`.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accept: JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

impl Recorder {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let record = record.clone();
                        async move { Ok::<_, Infallible>(Self::answer(request, &record).await) }
                    });
                    let _ = Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Recorder { addr, seen, accept }
    }

    async fn answer(request: Request<Incoming>, record: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let (body, body_error) = match body.collect().await {
            Ok(collected) => (collected.to_bytes(), None),
            Err(error) => (Bytes::new(), Some(error.to_string())),
        };
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        let seen = Seen {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            authorization: parts
                .headers
                .get_all(http::header::AUTHORIZATION)
                .iter()
                .map(|v| v.as_bytes().to_vec())
                .collect(),
            peer_protocol: header("x-peer-protocol"),
            body_len: body.len(),
            body_sha256: sha256(&body),
            body_error,
        };
        let reply = format!("ok {}\n", seen.body_len);
        record.lock().unwrap().push(seen);
        Response::new(Full::new(Bytes::from(reply)))
    }

    /// Removes and returns the requests seen for `path`.
    pub fn take(&self, path: &str) -> Vec<Seen> {
        let mut seen = self.seen.lock().unwrap();
        let (taken, kept) = std::mem::take(&mut *seen)
            .into_iter()
            .partition(|s| s.path == path);
        *seen = kept;
        taken
    }
}

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// A test CA and a server certificate it issued for `localhost` (only), as PEM files.
pub struct Certs {
    pub dir: TempDir,
    /// The CA certificate: what `--upstream-ca` trusts.
    pub ca: PathBuf,
    /// The server certificate and its key (nginx).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate and key in one file (HAProxy's `crt`).
    pub bundle: PathBuf,
}

impl Certs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Distinct subject names: rcgen's default is the same for both, and OpenSSL (curl,
        // HAProxy) takes a certificate whose issuer is its own subject for self-signed.
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "mintproxy interop test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let server = params.signed_by(&key, &ca).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (cert_pem, key_pem) = (server.pem(), key.serialize_pem());
        Certs {
            ca: write("ca.pem", &ca.pem()),
            cert: write("server.pem", &cert_pem),
            key: write("server-key.pem", &key_pem),
            bundle: write("server-bundle.pem", &format!("{cert_pem}{key_pem}")),
            dir,
        }
    }
}

impl Certs {
    /// A TLS acceptor serving the certificate for `localhost`, offering HTTP/1.1 only by
    /// ALPN.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let cert = std::fs::read_to_string(&self.cert).unwrap();
        let key = std::fs::read_to_string(&self.key).unwrap();
        tokio_rustls::TlsAcceptor::from(crate::support::tls_server_config(&cert, &key, &[b"http/1.1"]))
    }
}

/// A self-signed certificate made the usual way with the openssl CLI (so it carries
/// `basicConstraints CA:TRUE`, as OpenSSL's default config adds).
pub struct SelfSigned {
    pub dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl SelfSigned {
    pub async fn with_openssl(openssl: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("self.pem"), dir.path().join("key.pem"));
        let mut req = tokio::process::Command::new(openssl);
        req.current_dir(dir.path()).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "self.pem",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ]);
        let made = run(req, Duration::from_secs(30), "openssl req").await;
        assert!(made.status.success(), "openssl req failed: {}", made.stderr);
        // The premise of the tests that use it: OpenSSL marks its self-signed certificate
        // as a CA.
        let mut show = tokio::process::Command::new(openssl);
        show.arg("x509")
            .arg("-in")
            .arg(&cert)
            .args(["-noout", "-ext", "basicConstraints"]);
        let shown = run(show, Duration::from_secs(10), "openssl x509").await;
        assert!(
            shown.stdout.contains("CA:TRUE"),
            "expected openssl's self-signed certificate to have CA:TRUE: {}{}",
            shown.stdout,
            shown.stderr
        );
        SelfSigned { dir, cert, key }
    }
}

// ---------------------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------------------

/// A finished child process.
pub struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to completion, killing it and failing the test after `limit`.
pub async fn run(mut command: tokio::process::Command, limit: Duration, what: &str) -> Ran {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("{what} could not start: {e}"));
    Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `n` distinct ports that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// The listeners a peer may have. Every peer has the first four; nginx also serves the
/// openssl self-signed certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// HTTP/1.1 over TCP.
    Plain,
    /// HTTP/2 with prior knowledge over TCP.
    H2c,
    /// TLS offering only HTTP/1.1 by ALPN.
    TlsH1,
    /// TLS with HTTP/2 by ALPN.
    TlsH2,
    /// As `TlsH1` and `TlsH2`, with the openssl self-signed certificate.
    SelfSignedH1,
    SelfSignedH2,
}

impl Listener {
    pub const UPSTREAMS: [Listener; 4] = [Listener::Plain, Listener::H2c, Listener::TlsH1, Listener::TlsH2];

    pub fn name(self) -> &'static str {
        match self {
            Listener::Plain => "plain-h1",
            Listener::H2c => "h2c",
            Listener::TlsH1 => "tls-h1",
            Listener::TlsH2 => "tls-h2",
            Listener::SelfSignedH1 => "self-signed-tls-h1",
            Listener::SelfSignedH2 => "self-signed-tls-h2",
        }
    }

    pub fn tls(self) -> bool {
        !matches!(self, Listener::Plain | Listener::H2c)
    }

    /// Whether a request arrives at this listener as HTTP/2.
    pub fn http2(self) -> bool {
        matches!(self, Listener::H2c | Listener::TlsH2 | Listener::SelfSignedH2)
    }
}

/// A running nginx or HAProxy; dropping it kills it.
pub struct Peer {
    pub name: &'static str,
    child: Child,
    ports: Vec<(Listener, u16)>,
    /// Files worth showing when something fails (nginx's error.log, the stderr).
    logs: Vec<PathBuf>,
    _dir: TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    pub fn port(&self, listener: Listener) -> u16 {
        self.ports
            .iter()
            .find(|(l, _)| *l == listener)
            .unwrap_or_else(|| panic!("{} has no {} listener", self.name, listener.name()))
            .1
    }

    /// The last `lines` lines of each of the peer's logs, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut tail = String::new();
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            tail.push_str(&format!("--- {} (last {lines} lines):\n", log.display()));
            for line in &all[from..] {
                tail.push_str(line);
                tail.push('\n');
            }
        }
        tail
    }

    /// Spawns `program args` in `dir` and waits until every port accepts connections.
    async fn spawn(
        name: &'static str,
        program: &Path,
        args: &[&str],
        dir: TempDir,
        ports: Vec<(Listener, u16)>,
        mut logs: Vec<PathBuf>,
    ) -> Result<Peer, String> {
        let stdout = dir.path().join("stdout.log");
        let stderr = dir.path().join("stderr.log");
        logs.push(stderr.clone());
        let child = std::process::Command::new(program)
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .map_err(|e| format!("{name} could not start: {e}"))?;
        let mut peer = Peer {
            name,
            child,
            ports,
            logs,
            _dir: dir,
        };
        let deadline = Instant::now() + STARTUP;
        for (listener, port) in peer.ports.clone() {
            loop {
                if let Some(status) = peer.child.try_wait().unwrap() {
                    return Err(format!(
                        "{name} exited at startup ({status})\n{}",
                        peer.log_tail(20)
                    ));
                }
                let connect = TcpStream::connect(("127.0.0.1", port));
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{name} did not open its {} port {port} within {STARTUP:?}\n{}",
                        listener.name(),
                        peer.log_tail(20)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await; // the poll interval
            }
        }
        Ok(peer)
    }

    /// Starts a peer with fresh ports, retrying when another process took a port between
    /// choosing it and the peer binding it.
    async fn start_with_ports(
        name: &'static str,
        listeners: &[Listener],
        attempt: impl Fn(Vec<(Listener, u16)>) -> (TempDir, Vec<String>, Vec<PathBuf>),
        program: &Path,
    ) -> Peer {
        let mut last = String::new();
        for _ in 0..3 {
            let ports: Vec<_> = listeners
                .iter()
                .copied()
                .zip(free_ports(listeners.len()))
                .collect();
            let (dir, args, logs) = attempt(ports.clone());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match Peer::spawn(name, program, &args, dir, ports, logs).await {
                Ok(peer) => return peer,
                Err(error) if error.contains("in use") => last = error,
                Err(error) => panic!("{error}"),
            }
        }
        panic!("{last}")
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// nginx in the foreground, a single process, every path inside a temporary directory;
/// each listener proxies to `backend` over HTTP/1.1, unbuffered, passing the client's
/// headers through as received (duplicate `Authorization` values included) and adding
/// `X-Peer-Protocol: $server_protocol`.
pub async fn nginx(
    nginx: &Path,
    backend: SocketAddr,
    certs: &Certs,
    self_signed: Option<&SelfSigned>,
) -> Peer {
    let mut listeners = Listener::UPSTREAMS.to_vec();
    if self_signed.is_some() {
        listeners.extend([Listener::SelfSignedH1, Listener::SelfSignedH2]);
    }
    let configure = |ports: Vec<(Listener, u16)>| {
        let dir = tempfile::tempdir().unwrap();
        let tmp = path(dir.path()).to_owned();
        let mut servers = String::new();
        for (listener, port) in ports {
            let (cert, key) = match listener {
                Listener::SelfSignedH1 | Listener::SelfSignedH2 => {
                    let s = self_signed.unwrap();
                    (path(&s.cert).to_owned(), path(&s.key).to_owned())
                }
                _ => (path(&certs.cert).to_owned(), path(&certs.key).to_owned()),
            };
            let listen = match listener {
                Listener::Plain => String::new(),
                Listener::H2c => " http2".to_owned(),
                Listener::TlsH1 | Listener::SelfSignedH1 => " ssl".to_owned(),
                Listener::TlsH2 | Listener::SelfSignedH2 => " ssl http2".to_owned(),
            };
            let tls = if listener.tls() {
                format!("        ssl_certificate {cert};\n        ssl_certificate_key {key};\n")
            } else {
                String::new()
            };
            servers.push_str(&format!(
                "    server {{\n        listen 127.0.0.1:{port}{listen};\n        server_name localhost;\n{tls}        \
                 location / {{\n            proxy_pass http://recorder;\n        }}\n    }}\n"
            ));
        }
        let conf = format!(
            "daemon off;\n\
             master_process off;\n\
             worker_processes 1;\n\
             error_log {tmp}/error.log info;\n\
             pid {tmp}/nginx.pid;\n\
             events {{\n    worker_connections 1024;\n}}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {tmp}/client_body;\n\
             \x20   proxy_temp_path {tmp}/proxy;\n\
             \x20   fastcgi_temp_path {tmp}/fastcgi;\n\
             \x20   uwsgi_temp_path {tmp}/uwsgi;\n\
             \x20   scgi_temp_path {tmp}/scgi;\n\
             \x20   client_max_body_size 0;\n\
             \x20   proxy_http_version 1.1;\n\
             \x20   proxy_request_buffering off;\n\
             \x20   proxy_buffering off;\n\
             \x20   proxy_set_header Connection \"\";\n\
             \x20   proxy_set_header X-Peer-Protocol $server_protocol;\n\
             \x20   upstream recorder {{\n        server {backend};\n        keepalive 8;\n    }}\n\
             {servers}}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let args = vec![
            "-p".to_owned(),
            format!("{tmp}/"),
            "-e".to_owned(),
            format!("{tmp}/error.log"),
            "-c".to_owned(),
            format!("{tmp}/nginx.conf"),
        ];
        let logs = vec![dir.path().join("error.log")];
        (dir, args, logs)
    };
    Peer::start_with_ports("nginx", &listeners, configure, nginx).await
}

/// HAProxy in the foreground (`-db`), `mode http`, one frontend per listener, all to one
/// backend (the recorder over HTTP/1.1), adding `X-Peer-Protocol: HTTP/<version>`; its
/// log goes to stderr.
pub async fn haproxy(haproxy: &Path, backend: SocketAddr, certs: &Certs) -> Peer {
    let configure = |ports: Vec<(Listener, u16)>| {
        let dir = tempfile::tempdir().unwrap();
        let bundle = path(&certs.bundle);
        let mut frontends = String::new();
        for (listener, port) in ports {
            let bind = match listener {
                Listener::Plain => String::new(),
                Listener::H2c => " proto h2".to_owned(),
                Listener::TlsH1 => format!(" ssl crt {bundle} alpn http/1.1"),
                Listener::TlsH2 => format!(" ssl crt {bundle} alpn h2"),
                _ => unreachable!(),
            };
            frontends.push_str(&format!(
                "frontend {}\n    bind 127.0.0.1:{port}{bind}\n    default_backend recorder\n\n",
                listener.name()
            ));
        }
        let cfg = format!(
            "global\n\
             \x20   log stderr format raw local0 info\n\
             \x20   maxconn 1000\n\n\
             defaults\n\
             \x20   mode http\n\
             \x20   log global\n\
             \x20   option httplog\n\
             \x20   timeout connect 5s\n\
             \x20   timeout client 30s\n\
             \x20   timeout server 30s\n\n\
             {frontends}\
             backend recorder\n\
             \x20   http-request set-header X-Peer-Protocol HTTP/%[req.ver]\n\
             \x20   server recorder {backend}\n"
        );
        let file = dir.path().join("haproxy.cfg");
        std::fs::write(&file, cfg).unwrap();
        let args = vec!["-db".to_owned(), "-f".to_owned(), path(&file).to_owned()];
        (dir, args, Vec::new())
    };
    Peer::start_with_ports("haproxy", &Listener::UPSTREAMS, configure, haproxy).await
}
