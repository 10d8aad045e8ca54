//! A real FTPS server with implicit TLS for tests: vsftpd 3 from Debian's
//! `vsftpd` (`scripts/test.sh` installs it), run in the foreground on a
//! free port of 127.0.0.1 with a configuration of its own and everything
//! it writes under the test's folder (`vsftpd.conf`, `vsftpd.log` its
//! protocol and transfer log, `xferlog`, `vsftpd.stderr`, `empty/` its
//! `secure_chroot_dir`, `files/` the user's login folder). TLS from the
//! first byte (`implicit_ssl`), required for the login and every data
//! connection; passive mode only, on a range of free ports of 127.0.0.1.
//! Killed, and its user deleted, when dropped.
//!
//! ```ignore
//! let dir = tempfile::tempdir()?;
//! let (cert, key) = kit::certificate(dir.path());       // for localhost
//! let ftpd = Vsftpd::start(dir.path(), &cert, &key);
//! ftpd.mkdir("in");
//! ftpd.put("in/a.txt", b"hello");                        // as the user's
//! // ... the adapter takes it from ftpd.url("in") with ftpd.password ...
//! assert!(kit::names_in(&ftpd.files().join("in")).is_empty());
//! ```
//!
//! The user: vsftpd logs in local (system) users only, through PAM
//! (Debian's `/etc/pam.d/vsftpd`: not in `/etc/ftpusers`, a shell of
//! `/etc/shells`, the password checked by `pam_unix`), and must start as
//! root. So this needs root (as CI runs), and makes a throwaway system
//! user per server, `sluice-ftp-<pid>-<n>` with a home of `files/`, shell
//! `/bin/sh` and the password [`PASSWORD`] (`useradd --system`,
//! `chpasswd`); dropping the server deletes the user (`userdel`, never
//! with `-r`), and starting one deletes those a killed test process left
//! (their pid no longer runs). Virtual users (`pam_userdb`) would spare
//! `/etc/passwd`, but need a PAM service file in `/etc/pam.d` all the same
//! and Berkeley DB's `db_load`, which Debian does not install by default.
//!
//! What matters in the configuration: `seccomp_sandbox=NO`, `isolate=NO`
//! and `isolate_network=NO` (a container may forbid seccomp filters and
//! new namespaces); `require_ssl_reuse` is left at vsftpd's default
//! (`YES`: a data connection whose TLS handshake does not resume its
//! control connection's session is refused, `522 SSL connection failed:
//! session reuse required`), which the FTP adapter meets by giving each
//! control connection a session cache of its own; `force_dot_files=YES`
//! (`LIST` shows dot files as most servers do, so claims and temporary
//! files are seen); the owner of `files/` is the user (uploads, renames,
//! deletions), and `dir` is made searchable by others (vsftpd changes to
//! `files/` as the user), as its parent folders must be (as `/tmp` is).
//! vsftpd has no `MLSD`: clients list with `LIST`. TLS 1.3 is what rustls
//! and vsftpd agree on; `ssl_ciphers=HIGH` is for TLS 1.2 only (a client
//! that cannot do 1.3 gets suites that suit the ECDSA certificate of
//! `kit::certificate`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const VSFTPD: &str = "/usr/sbin/vsftpd";

/// How long [`Vsftpd::start`] waits for it to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Passive ports each server has (consecutive, free when it starts).
const PASSIVE_PORTS: u16 = 16;

/// The password of every server's user.
pub const PASSWORD: &str = "pw-Vsftpd-7";

/// What the names of the users this makes start with.
const USER_PREFIX: &str = "sluice-ftp-";

static STARTED: AtomicU64 = AtomicU64::new(0);

/// `useradd`, `chpasswd` and `userdel` of this process one at a time (each
/// locks `/etc/passwd`; across processes they wait on the lock themselves).
static ACCOUNTS: Mutex<()> = Mutex::new(());

pub struct Vsftpd {
    /// Where its configuration, log and files are.
    pub dir: PathBuf,
    /// The control port: TLS from the first byte.
    pub port: u16,
    /// The first and last of its passive ports.
    pub passive_ports: (u16, u16),
    /// The user to log in as, with [`PASSWORD`].
    pub user: String,
    pub password: String,
    /// The user's uid and gid (the owner of what it uploads).
    pub uid: u32,
    pub gid: u32,
    child: Child,
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        stop_tree(&mut self.child);
        delete_user(&self.user);
    }
}

/// How long a drop waits for sessions to end on their own (their clients
/// gone), reaped by vsftpd, before it kills them.
const SESSIONS_GRACE: Duration = Duration::from_secs(1);

/// Stop `child` and every process under it (vsftpd's sessions: a
/// privileged process and the user's, per connection), then reap it.
fn stop_tree(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // Killed, they would be left to init to reap (not every
        // container's init does).
        let deadline = Instant::now() + SESSIONS_GRACE;
        while !descendants_of(pid).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill(2) on our own child and the processes it started,
        // with valid signals; it touches no memory of ours.
        unsafe {
            // Stopped, it forks no more sessions while they are collected.
            libc::kill(pid, libc::SIGSTOP);
            for p in descendants_of(pid) {
                libc::kill(p, libc::SIGKILL);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The processes under `pid` (children, theirs, ...), from `/proc`.
fn descendants_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, parent) of every process.
    let all: Vec<(libc::pid_t, libc::pid_t)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter_map(|p| {
            // /proc/<p>/stat: pid (comm) state ppid ...; comm may have spaces.
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            Some((p, rest.split_whitespace().nth(1)?.parse().ok()?))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// Run an account tool (`useradd`, `chpasswd`, `userdel`) with `input` on
/// its standard input: its exit code and what it printed.
fn account_tool(program: &str, args: &[&str], input: Option<&str>) -> (Option<i32>, String) {
    use std::io::Write;
    let _one = ACCOUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut child = match Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return (None, format!("{program} does not run: {e}")),
    };
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    match child.wait_with_output() {
        Ok(out) => (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_string(),
        ),
        Err(e) => (None, format!("{program}: {e}")),
    }
}

/// Delete the user `name` (not its home: `files/` of a test's folder).
/// Best effort: a failure is printed, not raised (this runs on drop).
fn delete_user(name: &str) {
    // Its last processes may take a moment to go (killed above); then
    // `userdel` says the user is logged in (8), and `-f` overrides that.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (code, out) = account_tool("userdel", &[name], None);
        match code {
            Some(0) | Some(6) => return, // deleted, or no such user
            Some(8) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Some(8) => {
                let (code, out) = account_tool("userdel", &["-f", name], None);
                if code != Some(0) {
                    eprintln!("kit::vsftpd: userdel -f {name}: {out}");
                }
                return;
            }
            _ => {
                eprintln!("kit::vsftpd: userdel {name}: {out}");
                return;
            }
        }
    }
}

/// Delete the users this module made for processes that no longer run
/// (a test killed before it dropped its server).
fn delete_stale_users() {
    let Ok(passwd) = std::fs::read_to_string("/etc/passwd") else {
        return;
    };
    for line in passwd.lines() {
        let name = line.split(':').next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(USER_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            delete_user(name);
        }
    }
}

/// What `id args` prints, trimmed; `None` if it fails.
fn id(args: &[&str]) -> Option<String> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `count` consecutive ports of 127.0.0.1 free now: the first and last.
fn free_ports(count: u16) -> (u16, u16) {
    for _ in 0..100 {
        let first = super::free_port();
        let Some(last) = first.checked_add(count - 1) else {
            continue;
        };
        let free = (first..=last).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return (first, last);
        }
    }
    panic!("kit::vsftpd: found no {count} consecutive free ports on 127.0.0.1");
}

impl Vsftpd {
    /// Start one with its files in `dir` (which must exist; a folder of
    /// its own, under `/tmp` or another folder everyone may search), TLS
    /// with the certificate `cert` and its key `key` (PEM files).
    pub fn start(dir: &Path, cert: &Path, key: &Path) -> Vsftpd {
        Vsftpd::start_with(dir, cert, key, "")
    }

    /// [`start`](Self::start), with `extra` lines of `vsftpd.conf` after
    /// those of this module (a later line wins): `"require_ssl_reuse=YES\n"`.
    pub fn start_with(dir: &Path, cert: &Path, key: &Path, extra: &str) -> Vsftpd {
        assert!(
            Path::new(VSFTPD).exists(),
            "{VSFTPD} is missing: run ./scripts/test.sh, which installs Debian's vsftpd"
        );
        // SAFETY: getuid cannot fail and touches no memory of ours.
        let root = unsafe { libc::getuid() } == 0;
        assert!(
            root,
            "kit::vsftpd needs root: vsftpd must start as root, and logs in only system users, \
             one of which it makes (run the tests as root, as CI does)"
        );
        let dir = dir
            .canonicalize()
            .unwrap_or_else(|e| panic!("kit::vsftpd: its folder {}: {e}", dir.display()));
        let (cert, key) = (
            cert.canonicalize()
                .unwrap_or_else(|e| panic!("kit::vsftpd: the certificate {}: {e}", cert.display())),
            key.canonicalize()
                .unwrap_or_else(|e| panic!("kit::vsftpd: the key {}: {e}", key.display())),
        );
        for path in [&dir, &cert, &key] {
            let shown = path.display().to_string();
            assert!(
                !shown.contains(|c: char| c.is_whitespace() || c.is_control()),
                "kit::vsftpd: the path {shown:?} must not have spaces (it goes in vsftpd.conf)"
            );
        }
        // vsftpd changes to files/ as the user.
        super::open_to_others(
            &dir,
            "kit::vsftpd",
            &format!("its user must reach {}/files", dir.display()),
        );
        let files = dir.join("files");
        let empty = dir.join("empty");
        for d in [&files, &empty] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("kit::vsftpd: create {}: {e}", d.display()));
        }
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).expect("kit::vsftpd: chmod empty/");

        delete_stale_users();
        let user = format!(
            "{USER_PREFIX}{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::SeqCst)
        );
        let home = files.display().to_string();
        let (code, out) = account_tool(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--user-group",
                "--home-dir",
                &home,
                "--shell",
                "/bin/sh",
                &user,
            ],
            None,
        );
        assert_eq!(code, Some(0), "kit::vsftpd: useradd {user}: {out}");
        // From here on, a panic deletes the user too.
        struct Account(Option<String>);
        impl Drop for Account {
            fn drop(&mut self) {
                if let Some(name) = self.0.take() {
                    delete_user(&name);
                }
            }
        }
        let mut account = Account(Some(user.clone()));
        let (code, out) = account_tool("chpasswd", &[], Some(&format!("{user}:{PASSWORD}\n")));
        assert_eq!(code, Some(0), "kit::vsftpd: chpasswd for {user}: {out}");
        let uid: u32 = id(&["-u", &user])
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("kit::vsftpd: the uid of {user} (`id -u`)"));
        let gid: u32 = id(&["-g", &user])
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("kit::vsftpd: the gid of {user} (`id -g`)"));
        std::os::unix::fs::chown(&files, Some(uid), Some(gid)).expect("kit::vsftpd: chown files/");

        let port = super::free_port();
        let passive_ports = free_ports(PASSIVE_PORTS);
        let d = dir.display();
        let config = format!(
            "# Written by sluice-adapters' kit::vsftpd.\n\
             listen=YES\n\
             listen_ipv6=NO\n\
             listen_address=127.0.0.1\n\
             listen_port={port}\n\
             background=NO\n\
             seccomp_sandbox=NO\n\
             isolate=NO\n\
             isolate_network=NO\n\
             secure_chroot_dir={d}/empty\n\
             anonymous_enable=NO\n\
             local_enable=YES\n\
             pam_service_name=vsftpd\n\
             userlist_enable=NO\n\
             chroot_local_user=NO\n\
             local_root={d}/files\n\
             write_enable=YES\n\
             local_umask=022\n\
             force_dot_files=YES\n\
             delay_failed_login=0\n\
             ssl_enable=YES\n\
             implicit_ssl=YES\n\
             rsa_cert_file={cert}\n\
             rsa_private_key_file={key}\n\
             ssl_ciphers=HIGH\n\
             ssl_sslv2=NO\n\
             ssl_sslv3=NO\n\
             allow_anon_ssl=NO\n\
             force_local_logins_ssl=YES\n\
             force_local_data_ssl=YES\n\
             debug_ssl=YES\n\
             port_enable=NO\n\
             pasv_enable=YES\n\
             pasv_address=127.0.0.1\n\
             pasv_min_port={pasv_min}\n\
             pasv_max_port={pasv_max}\n\
             syslog_enable=NO\n\
             xferlog_enable=YES\n\
             xferlog_std_format=NO\n\
             dual_log_enable=YES\n\
             xferlog_file={d}/xferlog\n\
             vsftpd_log_file={d}/vsftpd.log\n\
             log_ftp_protocol=YES\n\
             {extra}",
            cert = cert.display(),
            key = key.display(),
            pasv_min = passive_ports.0,
            pasv_max = passive_ports.1,
        );
        let conf = dir.join("vsftpd.conf");
        std::fs::write(&conf, config).expect("kit::vsftpd: write vsftpd.conf");
        let stderr = std::fs::File::create(dir.join("vsftpd.stderr")).expect("kit::vsftpd: create vsftpd.stderr");
        let stdout = stderr.try_clone().expect("kit::vsftpd: vsftpd.stderr");
        let child = Command::new(VSFTPD)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{VSFTPD} does not start: {e}"));
        account.0 = None; // the server's drop deletes it now
        let mut vsftpd = Vsftpd {
            dir,
            port,
            passive_ports,
            user,
            password: PASSWORD.to_string(),
            uid,
            gid,
            child,
        };
        vsftpd.wait_ready();
        vsftpd
    }

    /// Wait until its port takes connections, or panic with its log.
    fn wait_ready(&mut self) {
        let port = self.port;
        let logs = [
            ("its log", self.dir.join("vsftpd.log")),
            ("its output", self.dir.join("vsftpd.stderr")),
        ];
        super::wait_until_up(
            &mut self.child,
            "vsftpd",
            START_TIMEOUT,
            // A connection and no TLS handshake: its session ends at once.
            || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .is_err()
                    .then(|| format!("did not listen on port {port}"))
            },
            &logs,
        );
    }

    /// The last `n` lines of its log (protocol, transfers, TLS).
    pub fn log_tail(&self, n: usize) -> String {
        super::tail_of(&self.dir.join("vsftpd.log"), n)
    }

    /// The user's login folder, where the tests put and find files.
    pub fn files(&self) -> PathBuf {
        self.dir.join("files")
    }

    /// `ftps://user@localhost:port/sub`: `sub` relative to the login
    /// folder (`""` for itself). `localhost` is the name in the
    /// certificate [`super::certificate`] makes.
    pub fn url(&self, sub: &str) -> String {
        format!("ftps://{}@localhost:{}/{sub}", self.user, self.port)
    }

    /// Make `files/sub` (and the folders above it), the user's.
    pub fn mkdir(&self, sub: &str) {
        let path = self.files().join(sub);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("kit::vsftpd: create {}: {e}", path.display()));
        for d in path
            .ancestors()
            .take_while(|d| d.starts_with(self.files()) && *d != self.files())
        {
            std::os::unix::fs::chown(d, Some(self.uid), Some(self.gid))
                .unwrap_or_else(|e| panic!("kit::vsftpd: chown {}: {e}", d.display()));
        }
    }

    /// Put `bytes` as `files/name` (its folder must exist), the user's, as
    /// a producer should: written aside, then moved in.
    pub fn put(&self, name: &str, bytes: &[u8]) {
        let path = self.files().join(name);
        let aside = self
            .dir
            .join(format!(".put-{}", STARTED.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&aside, bytes).unwrap_or_else(|e| panic!("kit::vsftpd: write {}: {e}", aside.display()));
        std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o644))
            .and_then(|()| std::os::unix::fs::chown(&aside, Some(self.uid), Some(self.gid)))
            .unwrap_or_else(|e| panic!("kit::vsftpd: chmod/chown {}: {e}", aside.display()));
        std::fs::rename(&aside, &path).unwrap_or_else(|e| panic!("kit::vsftpd: rename into {}: {e}", path.display()));
    }
}
