//! A real SMTP server for tests: aiosmtpd (from PyPI, in the tools
//! environment `scripts/test.sh` makes; `SLUICE_PYTHON` names another
//! interpreter that has it), run by `smtpd.py` beside this file on a free
//! port of 127.0.0.1, writing each mail it takes to a folder. Recipients'
//! local parts pick its answer (`refuse*` 550, `later*` 451, `flaky*` 451
//! once, `baddata*` 554 after DATA). Killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT: &str = include_str!("smtpd.py");

/// How the server is set up.
#[derive(Debug, Clone, Default)]
pub struct SmtpdOptions {
    /// Certificate and key (PEM): offers STARTTLS, or with `implicit` is
    /// TLS from the first byte.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub implicit: bool,
    /// Do not offer STARTTLS (with `tls`: only implicit TLS uses it).
    pub no_starttls: bool,
    /// `user`, `password`: required to send (over TLS unless `no_starttls`).
    pub auth: Option<(String, String)>,
}

pub struct Smtpd {
    /// Where the mails it took are (`N.eml`, `N.json`).
    pub mails: PathBuf,
    pub port: u16,
    child: Child,
}

impl Drop for Smtpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One mail the server took.
#[derive(Debug, Clone)]
pub struct Taken {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// Whether it came over TLS.
    pub tls: bool,
    /// The user it logged in as.
    pub auth: Option<String>,
    /// The content as received (dot-stuffing undone).
    pub content: Vec<u8>,
}

/// The Python with aiosmtpd: `SLUICE_PYTHON`, else the tools environment.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_PYTHON") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/venv/bin/python")
}

impl Smtpd {
    /// Start one, writing its mails under `dir` (which must exist).
    pub fn start(dir: &Path, opts: &SmtpdOptions) -> Smtpd {
        let python = python();
        let script = dir.join("smtpd.py");
        std::fs::write(&script, SCRIPT).expect("write smtpd.py");
        let mails = dir.join("mails");
        std::fs::create_dir_all(&mails).expect("mails/");
        let mut cmd = Command::new(&python);
        cmd.arg(&script).arg("--dir").arg(&mails);
        if let Some((cert, key)) = &opts.tls {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if opts.implicit {
            cmd.arg("--implicit");
        }
        if opts.no_starttls {
            cmd.arg("--no-starttls");
        }
        if let Some((u, p)) = &opts.auth {
            cmd.arg("--auth").arg(format!("{u}:{p}"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} cannot run ({e}): run ./scripts/test.sh, which installs aiosmtpd into it",
                    python.display()
                )
            });
        let mut line = String::new();
        let stdout = child.stdout.take().expect("its stdout");
        BufReader::new(stdout).read_line(&mut line).expect("its port");
        let port: u16 = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "aiosmtpd did not start (printed {line:?}): is it installed in {}? Run ./scripts/test.sh",
                    python.display()
                );
            }
        };
        Smtpd { mails, port, child }
    }

    /// `smtp://127.0.0.1:port` (`smtps://` for implicit TLS).
    pub fn url(&self, implicit: bool) -> String {
        format!("{}://localhost:{}", if implicit { "smtps" } else { "smtp" }, self.port)
    }

    /// Every mail taken so far, in order.
    pub fn taken(&self) -> Vec<Taken> {
        let mut out = Vec::new();
        for n in 1.. {
            let meta = self.mails.join(format!("{n}.json"));
            let Ok(text) = std::fs::read_to_string(&meta) else {
                break;
            };
            let v: serde_json::Value = serde_json::from_str(&text).expect("the envelope is JSON");
            let content = std::fs::read(self.mails.join(format!("{n}.eml"))).expect("the mail");
            out.push(Taken {
                mail_from: v["mail_from"].as_str().unwrap_or_default().to_string(),
                rcpt_tos: v["rcpt_tos"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                    .unwrap_or_default(),
                tls: v["tls"].as_bool().unwrap_or(false),
                auth: v["auth"].as_str().map(String::from),
                content,
            });
        }
        out
    }

    /// Wait (up to `within`) until it has taken `n` mails.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Taken> {
        let start = Instant::now();
        loop {
            let got = self.taken();
            if got.len() >= n || start.elapsed() > within {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
