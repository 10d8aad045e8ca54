//! `sluice users` and `sluice tokens`: who may use the REST API and the
//! portal. Run on the node's machine, beside the node (the box opened as
//! the node's `suspended resume` does); each change is recorded in the
//! audit log as done by `cli:<login>`. Or through a node's REST API with
//! an admin's token (`--server`), recorded as done by that admin.

use std::ffi::CStr;
use std::io::{IsTerminal, Read};

use clap::Subcommand;
use sluice_host::Config;
use sluice_msgbox::{MessageBox, Role, SystemClock};
use sluice_ops::OpsError;
use sluice_ops::access::{self, PASSWORD_LEN};
use sluice_ops::audit::{self, Actor};

use serde_json::Value;

use crate::inspect::{number, printable, text_of};
use crate::remote::{Remote, segment};
use crate::store::{open_read, open_write};

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user. The password is read from standard input (one line;
    /// typed without echo on a terminal), and kept as an Argon2 hash.
    Add {
        name: String,
        #[arg(long, value_parser = role_arg)]
        role: Role,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
    /// Remove a user, and every API token of theirs.
    Remove {
        name: String,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
    /// The users, with their roles (never a password or its hash).
    List {
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Make an API token for a user and print it: the only time it is
    /// shown (the box keeps only its SHA-256).
    Create {
        user: String,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<std::path::PathBuf>,
        /// `{"id", "user", "token"}`.
        #[arg(long)]
        json: bool,
    },
    /// The tokens (their ids and users, never the tokens).
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (refused from then on).
    Revoke {
        id: String,
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
}

fn role_arg(s: &str) -> Result<Role, String> {
    s.parse()
}

fn now() -> sluice_msgbox::Millis {
    use sluice_msgbox::Clock;
    SystemClock.now_ms()
}

/// Whoever runs the CLI on this machine: `cli:<login>`, the account of the
/// process's user id (not `$USER`, which anyone can set), else the id.
pub fn cli_actor() -> Actor {
    // SAFETY: getuid cannot fail; getpwuid_r writes into the buffers given
    // and the name it points to lives in `buf`, read before `buf` goes.
    let login = unsafe {
        let uid = libc::getuid();
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 4096];
        let rc = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found);
        if rc == 0 && !found.is_null() && !pw.pw_name.is_null() {
            CStr::from_ptr(pw.pw_name).to_string_lossy().into_owned()
        } else {
            format!("uid {uid}")
        }
    };
    Actor {
        name: format!("cli:{login}"),
        source: "cli".into(),
    }
}

/// Record a change's result in the audit log, then hand it back.
pub async fn audited<T>(
    b: &dyn MessageBox,
    action: &str,
    target: &str,
    detail: Option<String>,
    outcome: Result<T, OpsError>,
) -> anyhow::Result<T> {
    audit::record(b, &cli_actor(), action, target, &outcome, detail, now()).await?;
    Ok(outcome?)
}

pub async fn users(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add { name, role, config } => {
            access::check_name(&name)?;
            let password = read_password()?;
            let b = open_write(&Config::load(&crate::need(config)?)?)?;
            let added = access::add_user(&*b, &name, role, &password, now()).await;
            let added = audited(&*b, "users.add", &format!("user {name}"), None, added).await?;
            eprintln!("user `{}` added with role {}", added.name, added.role);
            b.close().await?;
        }
        UsersCommand::Remove { name, config } => {
            let b = open_write(&Config::load(&crate::need(config)?)?)?;
            let removed = access::remove_user(&*b, &name).await;
            let tokens = audited(&*b, "users.remove", &format!("user {name}"), None, removed).await?;
            eprintln!("user `{name}` removed, and {tokens} token(s) of theirs revoked");
            b.close().await?;
        }
        UsersCommand::List { config, json } => {
            let b = open_read(&crate::reading(config)?)?;
            let mut after: Option<String> = None;
            let mut all = Vec::new();
            // Users are few; read them a page at a time all the same.
            loop {
                let page = access::users(&*b, after.as_deref(), 1000).await?;
                let done = page.len() < 1000;
                after = page.last().map(|u| u.name.clone());
                all.extend(page);
                if done {
                    break;
                }
            }
            if json {
                outln!("{}", serde_json::to_string(&all)?);
            } else {
                print_users(&serde_json::to_value(&all)?);
            }
        }
    }
    Ok(())
}

pub async fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create { user, config, json } => {
            let b = open_write(&Config::load(&crate::need(config)?)?)?;
            let made = access::create_token(&*b, &user, now()).await;
            let made = audited(&*b, "tokens.create", &format!("user {user}"), None, made).await?;
            b.close().await?;
            print_token(&serde_json::to_value(&made)?, json);
        }
        TokensCommand::List { user, config, json } => {
            let b = open_read(&crate::reading(config)?)?;
            let list = access::tokens(&*b, user.as_deref()).await?;
            if json {
                outln!("{}", serde_json::to_string(&list)?);
            } else {
                outln!("{:<16}  {:<32}  {:<8}  CREATED", "ID", "USER", "ROLE");
                for t in &list {
                    outln!("{:<16}  {:<32}  {:<8}  {}", t.id, t.user, t.role.as_str(), t.created_at);
                }
                if list.is_empty() {
                    outln!("(no tokens)");
                }
            }
        }
        TokensCommand::Revoke { id, config } => {
            let b = open_write(&Config::load(&crate::need(config)?)?)?;
            let revoked = access::revoke_token(&*b, &id).await;
            audited(&*b, "tokens.revoke", &format!("token {id}"), None, revoked).await?;
            b.close().await?;
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
}

/// Users as answers show them (`UserInfo` serialized, or the API's JSON).
fn print_users(users: &Value) {
    outln!("{:<32}  {:<8}  CREATED", "NAME", "ROLE");
    let users = users.as_array().map(Vec::as_slice).unwrap_or_default();
    for u in users {
        outln!(
            "{:<32}  {:<8}  {}",
            printable(text_of(u, "name")),
            printable(text_of(u, "role")),
            printable(text_of(u, "created_at"))
        );
    }
    if users.is_empty() {
        outln!("(no users: add one with `sluice users add NAME --role admin`)");
    }
}

/// A token just made (`CreatedToken` serialized, or the API's JSON): the
/// token alone on standard output, what it is on standard error.
fn print_token(made: &Value, json: bool) {
    if json {
        outln!("{made}");
    } else {
        outln!("{}", text_of(made, "token"));
        eprintln!(
            "token {} made for `{}`: it is shown this once (the box keeps only its hash); \
             send it as `Authorization: Bearer <token>`",
            text_of(made, "id"),
            text_of(made, "user")
        );
    }
}

/// `sluice users` through a node's REST API (an admin's token).
pub async fn users_remote(r: &Remote, command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add { name, role, .. } => {
            access::check_name(&name)?;
            let password = read_password()?;
            let body = serde_json::json!({"name": name, "role": role.as_str(), "password": password});
            let added = r.post("/api/v1/users", &body, &format!("adding user {name}")).await?;
            eprintln!(
                "user `{}` added with role {}",
                text_of(&added, "name"),
                text_of(&added, "role")
            );
        }
        UsersCommand::Remove { name, .. } => {
            let path = format!("/api/v1/users/{}", segment(&name));
            let removed = r.delete(&path, &format!("removing user {name}")).await?;
            eprintln!(
                "user `{name}` removed, and {} token(s) of theirs revoked",
                number(&removed, "tokens_revoked")
            );
        }
        UsersCommand::List { json, .. } => {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let mut query = vec![("limit", "1000".to_string())];
                if let Some(a) = &after {
                    query.push(("after", a.clone()));
                }
                let page = r.get("/api/v1/users", &query, "listing users").await?;
                all.extend(page["items"].as_array().into_iter().flatten().cloned());
                match page["next"].as_str() {
                    Some(next) => after = Some(crate::remote::advance(&after, next.to_string())?),
                    None => break,
                }
            }
            let all = Value::Array(all);
            if json {
                outln!("{all}");
            } else {
                print_users(&all);
            }
        }
    }
    Ok(())
}

/// `sluice tokens` through a node's REST API (an admin's token); the API
/// does not list tokens (`main` says so before asking).
pub async fn tokens_remote(r: &Remote, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create { user, json, .. } => {
            let path = format!("/api/v1/users/{}/tokens", segment(&user));
            let made = r
                .post(
                    &path,
                    &serde_json::json!({}),
                    &format!("making a token for user {user}"),
                )
                .await?;
            print_token(&made, json);
        }
        TokensCommand::Revoke { id, .. } => {
            let path = format!("/api/v1/tokens/{}", segment(&id));
            r.delete(&path, &format!("revoking token {id}")).await?;
            eprintln!("token {id} revoked");
        }
        TokensCommand::List { .. } => {
            return Err(crate::Usage("the REST API does not list tokens".into()).into());
        }
    }
    Ok(())
}

/// The password: one line of standard input, without its line end. On a
/// terminal it is asked for, and typed without echo.
fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let _echo = if terminal {
        eprint!("password for the new user: ");
        NoEcho::new()
    } else {
        None
    };
    // One line (Enter ends it on a terminal), never more than a password
    // can be plus its line end.
    let mut bytes = Vec::new();
    let max = *PASSWORD_LEN.end() as u64 + 2;
    std::io::BufRead::read_until(&mut stdin.lock().take(max), b'\n', &mut bytes)?;
    let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let password =
        String::from_utf8(line.to_vec()).map_err(|_| OpsError::InvalidArgument("the password is not UTF-8".into()))?;
    if !PASSWORD_LEN.contains(&password.len()) {
        return Err(OpsError::InvalidArgument(format!(
            "a password must be {} to {} bytes long (read from standard input, one line)",
            PASSWORD_LEN.start(),
            PASSWORD_LEN.end()
        ))
        .into());
    }
    Ok(password)
}

/// Terminal echo off while it lives.
struct NoEcho(libc::termios);

impl NoEcho {
    fn new() -> Option<NoEcho> {
        // SAFETY: tcgetattr/tcsetattr on standard input with a zeroed
        // termios that tcgetattr fills before it is used.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            t.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(NoEcho(saved))
        }
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: restores the settings tcgetattr read.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}
