//! A real IMAP and POP3 server for tests: Dovecot 2.3 from Debian's
//! `dovecot-core`, `dovecot-imapd` and `dovecot-pop3d` (`scripts/test.sh`
//! installs them), run in the foreground on free ports of 127.0.0.1 with a
//! configuration of its own and everything it writes under the test's
//! folder (`run/` its sockets, `state/`, `dovecot.log`, `users` its
//! passwd-file, `mail/<user>/` each user's INBOX as a Maildir). Killed when
//! dropped.
//!
//! ```ignore
//! let dir = tempfile::tempdir()?;
//! let dovecot = Dovecot::start(dir.path(), &DovecotOptions::default());
//! dovecot.deliver("sluice", b"Subject: hi\r\n\r\nhello\r\n"); // seed the INBOX
//! // ... the adapter fetches from imap://127.0.0.1:{dovecot.imap_port} ...
//! assert!(dovecot.mailbox("sluice").is_empty());           // it deleted it
//! ```
//!
//! With [`DovecotOptions::tls`] it offers STARTTLS on both ports and listens
//! for implicit TLS too ([`Dovecot::imaps_port`], [`Dovecot::pop3s_port`]),
//! and refuses plaintext logins (`LOGIN`, `USER`/`PASS`, `AUTH PLAIN`)
//! without TLS; without it, logins in the clear are allowed. Beware:
//! Dovecot counts a connection whose two ends have the same address as
//! secure, so a client on 127.0.0.1 may log in without TLS all the same; a
//! test that wants the refusal connects from another loopback address
//! (bind the client's socket to 127.0.0.2). Dovecot's penalty after a
//! wrong password (seconds of delay on later logins from the address) is
//! off, so a test may try a wrong password and then the right one at once.
//!
//! Users (name, password) come from [`DovecotOptions::users`]. The mail
//! belongs to the user the tests run as, except as root: Dovecot runs no
//! IMAP or POP3 session as root, so the Maildirs belong to `nobody` then
//! ([`Dovecot::mail_uid`]), `dir` is made searchable by others, and its
//! parent folders must be (as `/tmp` is); its login processes run as
//! `dovenull` and its auth process as `dovecot` (Debian's package makes
//! both; `nobody` if missing). As any other user, everything runs as that
//! user, without chroots.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DOVECOT: &str = "/usr/sbin/dovecot";

/// How long [`Dovecot::start`] waits for it to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The user [`DovecotOptions::default`] has, and the password.
pub const USER: &str = "sluice";
pub const PASSWORD: &str = "pw-test";

/// How the server is set up.
#[derive(Debug, Clone)]
pub struct DovecotOptions {
    /// Certificate and key (PEM files): STARTTLS on both ports, the
    /// implicit-TLS ports too, and no plaintext login without TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Name and password of each user (default: `sluice`, `pw-test`).
    pub users: Vec<(String, String)>,
}

impl Default for DovecotOptions {
    fn default() -> Self {
        DovecotOptions {
            tls: None,
            users: vec![(USER.to_string(), PASSWORD.to_string())],
        }
    }
}

pub struct Dovecot {
    /// Where its configuration, sockets, log and mail are.
    pub dir: PathBuf,
    pub imap_port: u16,
    pub pop3_port: u16,
    /// IMAP over TLS from the first byte (with [`DovecotOptions::tls`]).
    pub imaps_port: Option<u16>,
    /// POP3 over TLS from the first byte (with [`DovecotOptions::tls`]).
    pub pop3s_port: Option<u16>,
    /// Name and password of each user.
    pub users: Vec<(String, String)>,
    /// Who owns the Maildirs: the user the tests run as, `nobody` as root.
    pub mail_uid: u32,
    pub mail_gid: u32,
    child: Child,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // Its master takes a second to stop on SIGTERM: stop it where it
        // is (it forks no more), kill its children, then it.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child and on its children, with
            // valid signals; it touches no memory of ours.
            unsafe {
                libc::kill(pid, libc::SIGSTOP);
                for child in children_of(pid) {
                    libc::kill(child, libc::SIGKILL);
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The processes whose parent is `pid` (from `/proc`).
fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|p| {
            // /proc/<p>/stat: pid (comm) state ppid ...; comm may have spaces.
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .is_some_and(|stat| {
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<libc::pid_t>().ok())
                        == Some(pid)
                })
        })
        .collect()
}

/// What `id args` prints, trimmed; `None` if it fails.
fn id(args: &[&str]) -> Option<String> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The uid and gid of the account `name`.
fn ids_of(name: &str) -> Option<(u32, u32)> {
    let uid = id(&["-u", name])?.parse().ok()?;
    let gid = id(&["-g", name])?.parse().ok()?;
    Some((uid, gid))
}

/// The flags of a mail file of a Maildir, from its name: `S` (seen), `F`
/// (flagged), `R` (replied), `T` (deleted, not yet expunged), `D` (draft),
/// sorted as Dovecot writes them; empty for a mail in `new/` or without any.
pub fn flags_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.split_once(":2,") {
        Some((_, flags)) => flags.to_string(),
        None => String::new(),
    }
}

/// Whether something on `port` answers: with `greeting`, a first line
/// (Dovecot greets once its login process and auth are up).
fn answers(port: u16, greeting: bool) -> bool {
    let Ok(stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if !greeting {
        return true;
    }
    if stream.set_read_timeout(Some(Duration::from_millis(500))).is_err() {
        return false;
    }
    let mut line = String::new();
    matches!(BufReader::new(stream).read_line(&mut line), Ok(n) if n > 0 && line.starts_with(['*', '+']))
}

static DELIVERED: AtomicU64 = AtomicU64::new(0);

impl Dovecot {
    /// Start one with its files in `dir` (which must exist, with a short
    /// path: its sockets go in `dir/run`).
    pub fn start(dir: &Path, opts: &DovecotOptions) -> Dovecot {
        assert!(
            Path::new(DOVECOT).exists(),
            "{DOVECOT} is missing: run ./scripts/test.sh, which installs Debian's dovecot-imapd and dovecot-pop3d"
        );
        let version = Command::new(DOVECOT)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| panic!("{DOVECOT} --version: {e}"));
        assert!(
            version.starts_with("2.3."),
            "kit::dovecot writes a configuration for Dovecot 2.3 (Debian bookworm's), found {version:?}"
        );
        let dir = dir
            .canonicalize()
            .unwrap_or_else(|e| panic!("kit::dovecot: its folder {}: {e}", dir.display()));
        let shown = dir.display().to_string();
        assert!(
            !shown.contains(|c: char| c.is_whitespace() || "\"'<>#{}%$".contains(c)),
            "kit::dovecot: its folder's path {shown:?} must not have spaces or quotes (it goes in dovecot.conf)"
        );
        // Unix socket paths are at most 107 bytes; the longest is
        // run/replication-notify-fifo.
        assert!(
            shown.len() + "/run/replication-notify-fifo".len() < 108,
            "kit::dovecot: its folder's path {shown:?} is too long for Dovecot's sockets under it"
        );
        assert!(!opts.users.is_empty(), "kit::dovecot: no users");
        for (name, password) in &opts.users {
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c)),
                "kit::dovecot: user name {name:?} must be letters, digits, '.', '_', '-' or '@'"
            );
            assert!(
                !password.contains([':', '\n', '\r']) && !password.is_empty(),
                "kit::dovecot: the password of {name} must be neither empty nor have ':' or line breaks"
            );
        }

        // SAFETY: getuid and getgid cannot fail and touch no memory of ours.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let root = uid == 0;
        // Dovecot runs no mail session as root, nor a login process.
        let (mail_uid, mail_gid) = if root {
            ids_of("nobody").expect("kit::dovecot runs mail sessions as nobody when root: `id nobody` failed")
        } else {
            (uid, gid)
        };
        let (internal_user, internal_group, login_user) = if root {
            // Debian's package makes both accounts; nobody will do.
            let internal = if ids_of("dovecot").is_some() {
                "dovecot"
            } else {
                "nobody"
            };
            let group = id(&["-gn", internal]).expect("kit::dovecot: the group of its internal user (`id -gn`)");
            let login = if ids_of("dovenull").is_some() {
                "dovenull"
            } else {
                "nobody"
            };
            (internal.to_string(), group, login.to_string())
        } else {
            let user = id(&["-un"]).expect("kit::dovecot: the name of the user the tests run as (`id -un`)");
            let group = id(&["-gn"]).expect("kit::dovecot: the name of the group the tests run as (`id -gn`)");
            (user.clone(), group, user)
        };
        if root {
            // Mail sessions (as nobody) must reach dir/mail/<user>.
            super::open_to_others(&dir, "kit::dovecot", "it runs mail sessions as nobody when root");
        }

        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap_or_else(|e| panic!("kit::dovecot: create {sub}/: {e}"));
        }
        let chown = |path: &Path| {
            if root {
                std::os::unix::fs::chown(path, Some(mail_uid), Some(mail_gid))
                    .unwrap_or_else(|e| panic!("kit::dovecot: chown {}: {e}", path.display()));
            }
        };
        chown(&dir.join("mail"));
        let mut passwd = String::new();
        for (name, password) in &opts.users {
            let home = dir.join("mail").join(name);
            for sub in ["", "new", "cur", "tmp"] {
                let d = home.join(sub);
                std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("kit::dovecot: create {}: {e}", d.display()));
                chown(&d);
            }
            // name:password:uid:gid:(gecos):home:(shell): passwd-file
            // refuses uid and gid 0, mail_uid and mail_gid cover them.
            let gid_field = if mail_gid == 0 {
                String::new()
            } else {
                mail_gid.to_string()
            };
            passwd.push_str(&format!(
                "{name}:{{PLAIN}}{password}:{mail_uid}:{gid_field}::{}::\n",
                home.display()
            ));
        }
        let users = dir.join("users");
        std::fs::write(&users, passwd).expect("kit::dovecot: write users");
        // Its auth process reads it (as its internal user when root).
        std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).expect("kit::dovecot: chmod users");

        let (imap_port, pop3_port) = (super::free_port(), super::free_port());
        let (imaps_port, pop3s_port) = match opts.tls {
            Some(_) => (Some(super::free_port()), Some(super::free_port())),
            None => (None, None),
        };
        let tls = match &opts.tls {
            Some((cert, key)) => format!(
                "ssl = yes\nssl_cert = <{}\nssl_key = <{}\ndisable_plaintext_auth = yes\n",
                cert.display(),
                key.display()
            ),
            None => "ssl = no\ndisable_plaintext_auth = no\n".to_string(),
        };
        // Chroots need root; so do the default users.
        let chroot = if root { "" } else { "  chroot =\n" };
        let service = |name: &str, plain: &str, port: u16, secure: &str, secure_port: Option<u16>| {
            format!(
                "service {name} {{\n{chroot}  inet_listener {plain} {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  \
                 inet_listener {secure} {{\n    address = 127.0.0.1\n    port = {}\n    ssl = yes\n  }}\n}}\n",
                secure_port.unwrap_or(0)
            )
        };
        let d = dir.display();
        // The anvil-auth-penalty socket, closed to everyone but root (mode
        // 0), denies Dovecot's auth process (never root) its penalty: seconds
        // of delay on every login from an address after a wrong password.
        let config = format!(
            "# Written by sluice-adapters' kit::dovecot.\n\
             protocols = imap pop3\n\
             listen = 127.0.0.1\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = sluice-dovecot\n\
             log_path = {d}/dovecot.log\n\
             auth_verbose = yes\n\
             default_internal_user = {internal_user}\n\
             default_internal_group = {internal_group}\n\
             default_login_user = {login_user}\n\
             first_valid_uid = 1\n\
             first_valid_gid = 0\n\
             mail_uid = {mail_uid}\n\
             mail_gid = {mail_gid}\n\
             mail_location = maildir:{d}/mail/%u\n\
             mail_max_userip_connections = 100\n\
             auth_mechanisms = plain login\n\
             auth_failure_delay = 0\n\
             {tls}\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/users\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = username_format=%u {d}/users\n}}\n\
             {imap}{pop3}\
             service anvil {{\n{chroot}  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n",
            imap = service("imap-login", "imap", imap_port, "imaps", imaps_port),
            pop3 = service("pop3-login", "pop3", pop3_port, "pop3s", pop3s_port),
        );
        let conf = dir.join("dovecot.conf");
        std::fs::write(&conf, config).expect("kit::dovecot: write dovecot.conf");
        let stderr = std::fs::File::create(dir.join("dovecot.stderr")).expect("kit::dovecot: create dovecot.stderr");
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{DOVECOT} does not start: {e}"));
        let mut dovecot = Dovecot {
            dir,
            imap_port,
            pop3_port,
            imaps_port,
            pop3s_port,
            users: opts.users.clone(),
            mail_uid,
            mail_gid,
            child,
        };
        dovecot.wait_ready();
        dovecot
    }

    /// Wait until every port answers, or panic with the end of its log.
    fn wait_ready(&mut self) {
        let mut waiting: Vec<(u16, bool)> = vec![(self.imap_port, true), (self.pop3_port, true)];
        waiting.extend(
            self.imaps_port
                .iter()
                .chain(self.pop3s_port.iter())
                .map(|p| (*p, false)),
        );
        let logs = [
            ("its log", self.dir.join("dovecot.log")),
            ("its stderr", self.dir.join("dovecot.stderr")),
        ];
        super::wait_until_up(
            &mut self.child,
            "Dovecot",
            START_TIMEOUT,
            || {
                waiting.retain(|(port, greeting)| !answers(*port, *greeting));
                (!waiting.is_empty()).then(|| {
                    format!(
                        "did not answer on port(s) {:?}",
                        waiting.iter().map(|(p, _)| *p).collect::<Vec<_>>()
                    )
                })
            },
            &logs,
        );
    }

    /// Dovecot's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// The Maildir of `user`'s INBOX (`new/`, `cur/`, `tmp/` in it).
    pub fn maildir(&self, user: &str) -> PathBuf {
        assert!(
            self.users.iter().any(|(name, _)| name == user),
            "kit::dovecot: no user {user:?} (see DovecotOptions::users)"
        );
        self.dir.join("mail").join(user)
    }

    /// Put the mail `raw` into `user`'s INBOX, as a delivery agent would:
    /// written in `tmp/`, then renamed into `new/`.
    pub fn deliver(&self, user: &str, raw: &[u8]) {
        let maildir = self.maildir(user);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let name = format!(
            "{}.M{:06}P{}Q{}.sluice-kit",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            DELIVERED.fetch_add(1, Ordering::SeqCst)
        );
        let tmp = maildir.join("tmp").join(&name);
        let mut file =
            std::fs::File::create(&tmp).unwrap_or_else(|e| panic!("kit::dovecot: create {}: {e}", tmp.display()));
        file.write_all(raw)
            .and_then(|()| file.sync_all())
            .unwrap_or_else(|e| panic!("kit::dovecot: write {}: {e}", tmp.display()));
        drop(file);
        // SAFETY: getuid cannot fail and touches no memory of ours.
        if unsafe { libc::getuid() } == 0 {
            std::os::unix::fs::chown(&tmp, Some(self.mail_uid), Some(self.mail_gid))
                .unwrap_or_else(|e| panic!("kit::dovecot: chown {}: {e}", tmp.display()));
        }
        let new = maildir.join("new").join(&name);
        std::fs::rename(&tmp, &new).unwrap_or_else(|e| panic!("kit::dovecot: rename into {}: {e}", new.display()));
    }

    /// Make the folder `name` of `user` (Maildir++: `.name` beside the
    /// INBOX's `cur/`, owned as the mail is); its path.
    pub fn make_folder(&self, user: &str, name: &str) -> PathBuf {
        let folder = self.maildir(user).join(format!(".{name}"));
        for sub in ["", "cur", "new", "tmp"] {
            let d = folder.join(sub);
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("kit::dovecot: create {}: {e}", d.display()));
            // SAFETY: getuid cannot fail and touches no memory of ours.
            if unsafe { libc::getuid() } == 0 {
                std::os::unix::fs::chown(&d, Some(self.mail_uid), Some(self.mail_gid))
                    .unwrap_or_else(|e| panic!("kit::dovecot: chown {}: {e}", d.display()));
            }
        }
        folder
    }

    /// The mail files now in `user`'s INBOX (`new/` and `cur/`), in the
    /// order [`deliver`](Self::deliver) put them (by name; Dovecot keeps the
    /// name when it moves one to `cur/`): one deleted and expunged is gone;
    /// [`flags_of`] reads the flags of one in `cur/`.
    pub fn mailbox(&self, user: &str) -> Vec<PathBuf> {
        let maildir = self.maildir(user);
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let d = maildir.join(sub);
            for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("kit::dovecot: read {}: {e}", d.display())) {
                let entry = entry.unwrap_or_else(|e| panic!("kit::dovecot: read {}: {e}", d.display()));
                files.push(entry.path());
            }
        }
        files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
        files
    }
}

#[cfg(test)]
#[path = "dovecot_tests.rs"]
mod tests;
