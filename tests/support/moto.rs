//! A local moto server (`python3 -m moto.server`), one per test process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long to wait for a freshly spawned moto to answer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs moto's server in a daemon thread and exits as soon as stdin reaches
/// EOF, which happens when the test process (holding the write end) dies —
/// even though a `static` is never dropped. `argv[1]` is the port.
const LAUNCHER: &str = r#"
import logging, os, sys, threading
logging.getLogger("werkzeug").setLevel(logging.ERROR)
import moto.server

def serve():
    try:
        moto.server.main(["-H", "127.0.0.1", "-p", sys.argv[1]])
    finally:
        os._exit(3)

threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
os._exit(0)
"#;

/// A running moto server on a loopback port.
pub struct Moto {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    addr: SocketAddr,
    /// moto's stderr during startup (removed once moto answers).
    log: PathBuf,
    child: Mutex<Child>,
    /// Keeping the write end of moto's stdin open keeps moto alive.
    stdin: Mutex<Option<ChildStdin>>,
}

/// The moto server shared by every test of this process, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(Moto::start)
}

/// Makes sure `python3` can import moto's server (and flask/werkzeug);
/// otherwise installs `moto[server]` with pip. Panics if that fails.
pub fn ensure_moto_installed() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        if moto_importable() {
            return;
        }
        eprintln!("support: moto is not installed; running `python3 -m pip install --quiet 'moto[server]'`");
        let status = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "moto[server]"])
            .stdin(Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() && moto_importable() => {}
            Ok(s) => panic!(
                "support: `python3 -m pip install 'moto[server]'` did not give a usable moto ({s}); \
                 install it by hand (e.g. in a virtualenv, or with --user --break-system-packages) \
                 so that `python3 -c 'import moto.server, flask, werkzeug'` works"
            ),
            Err(e) => panic!("support: could not run `python3 -m pip`: {e}; is python3 installed?"),
        }
    });
}

fn moto_importable() -> bool {
    Command::new("python3")
        .args(["-c", "import moto.server, flask, werkzeug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("support: bind 127.0.0.1:0");
    listener.local_addr().expect("support: local_addr").port()
}

impl Moto {
    /// Starts a new, private moto server and waits until it answers.
    /// Most tests want the shared [`moto()`] instead. The server is stopped
    /// when the returned value is dropped or the test process exits.
    pub fn start() -> Moto {
        ensure_moto_installed();
        let port = free_loopback_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::env::temp_dir().join(format!("lambda-secrets-moto-{}-{port}.log", std::process::id()));
        let log_file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("support: create moto log {}: {e}", log.display()));
        let mut child = Command::new("python3")
            .args(["-c", LAUNCHER, &port.to_string()])
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap_or_else(|e| panic!("support: could not spawn python3 for moto: {e}"));
        let stdin = child.stdin.take();
        let moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            addr,
            log,
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
        };
        moto.wait_ready();
        // moto keeps its descriptor; only startup errors were of interest.
        let _ = std::fs::remove_file(&moto.log);
        moto
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.lock().unwrap().try_wait() {
                panic!(
                    "support: moto exited during startup ({status}); its stderr:\n{}",
                    self.log_contents()
                );
            }
            if let Ok((status, _)) = self.raw_request("GET", "/moto-api/") {
                if status == 200 {
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "support: moto did not answer on {} within {STARTUP_TIMEOUT:?}; its stderr:\n{}",
                    self.endpoint,
                    self.log_contents()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// moto's stderr so far (startup only); removes the file.
    fn log_contents(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<{e}>"));
        let _ = std::fs::remove_file(&self.log);
        text
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Turns on moto's IAM enforcement for every request from now on (`POST
    /// /moto-api/reset-auth` with 0 free actions): requests must be signed by an access key of
    /// an IAM user whose policies allow the action. moto checks actions only (resources are `*`
    /// for SSM and Secrets Manager) and denies KMS statements with conditions.
    pub fn enforce_iam(&self) {
        match self.raw_request_with_body("POST", "/moto-api/reset-auth", "0") {
            Ok((200, _)) => {}
            Ok((status, body)) => panic!("support: moto reset-auth answered {status}: {body}"),
            Err(e) => panic!("support: moto reset-auth failed: {e}"),
        }
    }

    /// Wipes all moto state (`POST /moto-api/reset`). Note that the shared
    /// server is used by all tests of the process, which run in parallel.
    pub fn reset(&self) {
        match self.raw_request("POST", "/moto-api/reset") {
            Ok((200, _)) => {}
            Ok((status, body)) => panic!("support: moto reset answered {status}: {body}"),
            Err(e) => panic!("support: moto reset failed: {e}"),
        }
    }

    /// A blocking HTTP/1.1 request without a body; returns status and body.
    fn raw_request(&self, method: &str, path: &str) -> std::io::Result<(u16, String)> {
        self.raw_request_with_body(method, path, "")
    }

    /// A blocking HTTP/1.1 request; returns status and body.
    fn raw_request_with_body(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr.port(),
            body.len()
        )?;
        stream.flush()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw);
        let status = text
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "not an HTTP response: {:?}",
                        text.chars().take(80).collect::<String>()
                    ),
                )
            })?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing stdin makes the launcher exit; kill as a backstop.
        if let Ok(stdin) = self.stdin.get_mut() {
            drop(stdin.take());
        }
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
