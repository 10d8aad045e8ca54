//! A real SSH/SFTP server for tests: OpenSSH's sshd from Debian's
//! `openssh-server` (`scripts/test.sh` installs it), on a free port of
//! 127.0.0.1, with a host key and an authorized client key of its own,
//! serving SFTP with `internal-sftp` as the user the tests run as. Killed
//! when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    /// Where its keys and configuration are; `files/` is for the tests.
    pub dir: PathBuf,
    pub port: u16,
    /// The host key as `ssh-keyscan` prints it (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    /// The user to log in as (the one the tests run as).
    pub user: String,
    child: Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An ed25519 key pair without a passphrase at `path` and `path.pub`.
pub fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "sluice-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client) runs")
        .success();
    assert!(ok, "ssh-keygen failed");
}

impl Sshd {
    /// Start one with its files in `dir` (which must exist and be empty).
    pub fn start(dir: &Path) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: run ./scripts/test.sh, which installs Debian's openssh-server"
        );
        keygen(&dir.join("host"));
        keygen(&dir.join("client"));
        std::fs::copy(dir.join("client.pub"), dir.join("authorized_keys")).expect("authorized_keys");
        std::fs::create_dir(dir.join("files")).expect("files/");
        // sshd wants its privilege-separation folder.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = super::free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
                 AuthorizedKeysFile {keys}\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\n",
                host = dir.join("host").display(),
                pid = dir.join("sshd.pid").display(),
                keys = dir.join("authorized_keys").display(),
            ),
        )
        .expect("sshd_config");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sshd starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "sshd did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_key = std::fs::read_to_string(dir.join("host.pub"))
            .expect("host.pub")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let user = String::from_utf8(Command::new("id").arg("-un").output().expect("id -un").stdout)
            .expect("a UTF-8 user name")
            .trim()
            .to_string();
        Sshd {
            dir: dir.to_path_buf(),
            port,
            host_key,
            user,
            child,
        }
    }

    /// The folder the tests put and find files in.
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    /// The client's private key file.
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client")
    }

    /// `sftp://user@127.0.0.1:port/` and the absolute path of `files/sub`.
    pub fn url(&self, sub: &str) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}/{}",
            self.user,
            self.port,
            self.files().join(sub).display()
        )
    }
}
