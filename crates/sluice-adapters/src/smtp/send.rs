//! SMTP send: one mail per message, each recipient's answer kept.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use mail_send::Credentials;
use mail_send::SmtpClient;
use serde::Deserialize;
use smtp_proto::{EXT_START_TLS, EhloResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::mail::{self, Attachment, Headers, Layout, Mailbox, Refused};
use crate::macros::Template;
use crate::support::guard::WriteTimeout;
use crate::support::pool::{Connector, Pool};
use crate::support::secret::Secret;
use crate::{AdapterError, Body, Delivered, OtherPart, Outbound, TransmitError, Transmitter};

pub use crate::support::tls::StartTls;

fn default_max_connections() -> usize {
    4
}

fn default_data_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_subject() -> String {
    "%SourceFileName%".into()
}

fn default_attachment_name() -> String {
    "%SourceFileName%".into()
}

/// `type = "smtp"` send port (see the module's documentation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSendConfig {
    /// `smtp://host:port` (STARTTLS, port 25 by default) or
    /// `smtps://host:port` (TLS from the start, port 465).
    pub url: String,
    /// Log in as this user (the password from `password`, `password_env`
    /// or `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `smtp://` only: `required` (default), `opportunistic` or `off`.
    #[serde(default)]
    pub starttls: Option<StartTls>,
    /// A PEM file of certificate authorities trusted besides the built-in roots.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// The sender (`Name <address>`), with macros.
    pub from: String,
    /// Recipients (a list), with macros; at least one of `to`, `cc`, `bcc`.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub cc: Option<String>,
    /// Recipients not named in the mail's headers.
    #[serde(default)]
    pub bcc: Option<String>,
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The body's content type when it is the mail's text (default: the
    /// message's `mail.content_type`, else `http.content_type`, else
    /// `text/plain; charset=utf-8`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Send the body as an attachment (named `attachment_name`) instead of
    /// as the mail's text.
    #[serde(default)]
    pub attach: bool,
    #[serde(default = "default_attachment_name")]
    pub attachment_name: String,
    /// The mail's text above an attached body (`attach = true`), with macros.
    #[serde(default)]
    pub text: Option<String>,
    /// The name this node gives itself in `EHLO` (default: its host name).
    #[serde(default)]
    pub helo_name: Option<String>,
    #[serde(
        default = "crate::support::remote::defaults::connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// Each command's answer, and each write of the mail (an idle limit).
    #[serde(default = "crate::support::remote::defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The server's answer once the whole mail is sent (RFC 5321 suggests
    /// 10 minutes: servers scan the content first). Given up earlier, a
    /// mail the server then takes is sent again on the retry.
    #[serde(default = "default_data_timeout", with = "humantime_serde")]
    pub data_timeout: Duration,
    /// The whole of one mail (envelope, content, answer), at most.
    #[serde(
        default = "crate::support::remote::defaults::transfer_timeout",
        with = "humantime_serde"
    )]
    pub transfer_timeout: Duration,
    /// Connections open at once to the server, at most; idle ones are kept
    /// for the next mail (checked with `RSET`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl SmtpSendConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.password_file, &mut self.tls_ca].into_iter().flatten() {
            crate::support::names::resolve_in_place(base, p);
        }
    }

    /// Every template and its key.
    pub(super) fn templates(&self) -> Vec<(&'static str, &str)> {
        let mut t = vec![("from", self.from.as_str()), ("subject", self.subject.as_str())];
        for (key, v) in [
            ("to", &self.to),
            ("cc", &self.cc),
            ("bcc", &self.bcc),
            ("content_type", &self.content_type),
            ("text", &self.text),
        ] {
            if let Some(v) = v {
                t.push((key, v.as_str()));
            }
        }
        if self.attach {
            t.push(("attachment_name", self.attachment_name.as_str()));
        }
        t
    }

    pub fn build(&self) -> Result<SmtpTransmitter, AdapterError> {
        let config = |m: String| AdapterError::Config(m);
        let template = |key: &str, text: &str| Template::parse(text).map_err(|e| config(format!("{key}: {e}")));
        let optional = |key: &str, text: &Option<String>| text.as_deref().map(|t| template(key, t)).transpose();
        if self.to.is_none() && self.cc.is_none() && self.bcc.is_none() {
            return Err(config(
                "give the recipients: at least one of `to`, `cc` and `bcc`".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(config("max_connections must be at least 1".into()));
        }
        let server = self.server()?;
        Ok(SmtpTransmitter {
            pool: Pool::new(self.max_connections),
            from: template("from", &self.from)?,
            to: optional("to", &self.to)?,
            cc: optional("cc", &self.cc)?,
            bcc: optional("bcc", &self.bcc)?,
            subject: template("subject", &self.subject)?,
            content_type: optional("content_type", &self.content_type)?,
            attach: self
                .attach
                .then(|| template("attachment_name", &self.attachment_name))
                .transpose()?,
            text: optional("text", &self.text)?,
            transfer_timeout: self.transfer_timeout,
            data_timeout: self.data_timeout,
            server,
        })
    }

    fn server(&self) -> Result<Server, AdapterError> {
        let bad =
            |why: String| AdapterError::Config(format!("url {}: {why}", crate::support::secret::redact_url(&self.url)));
        let parsed = url::Url::parse(&self.url).map_err(|e| bad(format!("not a URL: {e}")))?;
        let (implicit_tls, default_port) = match parsed.scheme() {
            "smtp" => (false, 25),
            "smtps" => (true, 465),
            other => return Err(bad(format!("the scheme must be smtp:// or smtps://, not {other}://"))),
        };
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "give the user in `username` and the password in `password_env` or \
                 `password_file`, not in the URL (it is shown wherever the URL is)"
                    .into(),
            ));
        }
        if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("an SMTP URL is only smtp://host:port".into()));
        }
        let host = crate::support::remote::host_of(&parsed).ok_or_else(|| bad("it names no host".into()))?;
        let port = parsed.port().unwrap_or(default_port);
        if implicit_tls && self.starttls.is_some() {
            return Err(bad("`starttls` is for smtp://; smtps:// is TLS from the start".into()));
        }
        let starttls = self.starttls.unwrap_or_default();
        let tls = if implicit_tls || starttls != StartTls::Off {
            Some(crate::support::tls::client_connector(self.tls_ca.as_deref())?)
        } else {
            None
        };
        let credentials = match &self.username {
            Some(user) => Some((
                user.clone(),
                Secret::from_config("password", &self.password, &self.password_env, &self.password_file)?,
            )),
            None if self.password.is_some() || self.password_env.is_some() || self.password_file.is_some() => {
                return Err(AdapterError::Config("a password without `username`".into()));
            }
            None => None,
        };
        let helo = match &self.helo_name {
            Some(h) if !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()) => Some(h.clone()),
            Some(h) => return Err(AdapterError::Config(format!("helo_name {h:?} is not a host name"))),
            None => None,
        }
        .or_else(this_host);
        Ok(Server {
            shown: format!("{}://{host}:{port}", parsed.scheme()),
            host,
            port,
            implicit_tls,
            starttls,
            tls,
            credentials,
            helo,
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
        })
    }
}

/// This machine's host name, for `EHLO`, if it is a full one (a bare name
/// is refused by servers that check; the connection's address is given
/// instead, see [`Server::helo_for`]).
fn this_host() -> Option<String> {
    let name = gethostname::gethostname().to_string_lossy().into_owned();
    let fit = name.contains('.')
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    fit.then_some(name)
}

/// Where and how to connect.
struct Server {
    host: String,
    port: u16,
    implicit_tls: bool,
    starttls: StartTls,
    tls: Option<tokio_rustls::TlsConnector>,
    credentials: Option<(String, Secret)>,
    /// `helo_name`, or this machine's full host name; `None`: the
    /// connection's own address, as an address literal.
    helo: Option<String>,
    connect_timeout: Duration,
    timeout: Duration,
    /// `smtp://host:port`, for messages.
    shown: String,
}

/// How long an idle connection has to answer `RSET` before it is reused.
const ALIVE_CHECK: Duration = Duration::from_secs(5);

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Session = SmtpClient<Box<dyn Io>>;

/// A server's answer as people read it: `550 5.1.1 User unknown`.
fn said(r: &Response<String>) -> String {
    let text = r.message.replace(['\r', '\n'], " ");
    if r.esc[0] != 0 {
        format!("{} {}.{}.{} {}", r.code, r.esc[0], r.esc[1], r.esc[2], text.trim())
    } else {
        format!("{} {}", r.code, text.trim())
    }
}

impl Server {
    fn failed(&self, doing: &str, e: impl std::fmt::Display) -> String {
        format!("{doing} at {}: {e}", self.shown)
    }

    /// TLS on `stream` (the host name checked against the certificate).
    async fn tls(&self, stream: tokio::net::TcpStream) -> Result<Box<dyn Io>, String> {
        let Some(connector) = &self.tls else {
            return Err(self.failed("starting TLS", "TLS is off"));
        };
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| self.failed("starting TLS", e))?;
        match tokio::time::timeout(self.timeout, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => Ok(Box::new(tls)),
            Ok(Err(e)) => Err(self.failed("the TLS handshake", e)),
            Err(_) => Err(self.failed("the TLS handshake", format!("no answer within {:?}", self.timeout))),
        }
    }

    async fn greeting<T: AsyncRead + AsyncWrite + Unpin>(&self, c: &mut SmtpClient<T>) -> Result<(), String> {
        let r = tokio::time::timeout(self.timeout, c.read())
            .await
            .map_err(|_| self.failed("waiting for the greeting", format!("none within {:?}", self.timeout)))?
            .map_err(|e| self.failed("reading the greeting", e))?;
        if r.code != 220 {
            return Err(self.failed("connecting", format!("the server said {}", said(&r))));
        }
        Ok(())
    }

    async fn ehlo<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        c: &mut SmtpClient<T>,
        helo: &str,
    ) -> Result<EhloResponse<String>, String> {
        c.ehlo(helo).await.map_err(|e| self.failed("EHLO", e))
    }

    /// The name to give in `EHLO` on a connection from `local`.
    fn helo_for(&self, local: Option<std::net::SocketAddr>) -> String {
        match (&self.helo, local) {
            (Some(h), _) => h.clone(),
            (None, Some(a)) if a.is_ipv4() => format!("[{}]", a.ip()),
            (None, Some(a)) => format!("[IPv6:{}]", a.ip()),
            (None, None) => "localhost".into(),
        }
    }
}

#[async_trait]
impl Connector for Server {
    type Conn = Session;

    async fn dial(&self) -> Result<Session, String> {
        let tcp =
            crate::support::remote::connect(&self.host, self.port, self.connect_timeout, self.timeout, &self.shown)
                .await?;
        let helo = self.helo_for(tcp.local_addr().ok());
        let (mut client, ehlo, encrypted) = if self.implicit_tls {
            let mut c = SmtpClient {
                stream: self.tls(tcp).await?,
                timeout: self.timeout,
            };
            self.greeting(&mut c).await?;
            let ehlo = self.ehlo(&mut c, &helo).await?;
            (c, ehlo, true)
        } else {
            let mut c = SmtpClient {
                stream: tcp,
                timeout: self.timeout,
            };
            self.greeting(&mut c).await?;
            let ehlo = self.ehlo(&mut c, &helo).await?;
            let offered = ehlo.has_capability(EXT_START_TLS);
            match (self.starttls, offered) {
                (StartTls::Off, _) | (StartTls::Opportunistic, false) => (
                    SmtpClient {
                        stream: Box::new(c.stream) as Box<dyn Io>,
                        timeout: self.timeout,
                    },
                    ehlo,
                    false,
                ),
                (StartTls::Required, false) => {
                    return Err(self.failed(
                        "STARTTLS",
                        "the server does not offer it, and starttls = \"required\" (set \"opportunistic\" to go \
                         on in clear with such a server)",
                    ));
                }
                (_, true) => {
                    let r = c.cmd(b"STARTTLS\r\n").await.map_err(|e| self.failed("STARTTLS", e))?;
                    if r.code != 220 {
                        return Err(self.failed("STARTTLS", format!("the server said {}", said(&r))));
                    }
                    let mut c = SmtpClient {
                        stream: self.tls(c.stream).await?,
                        timeout: self.timeout,
                    };
                    let ehlo = self.ehlo(&mut c, &helo).await?;
                    (c, ehlo, true)
                }
            }
        };
        if let Some((user, password)) = &self.credentials {
            if !encrypted && self.starttls != StartTls::Off {
                return Err(self.failed(
                    "logging in",
                    "the connection is not encrypted (the server offers no STARTTLS); the password is not sent \
                     in clear unless starttls = \"off\"",
                ));
            }
            let credentials = Credentials::new(user.as_str(), password.expose());
            client
                .authenticate(&credentials, &ehlo)
                .await
                .map_err(|e| self.failed(&format!("logging in as {user}"), e))?;
        }
        Ok(client)
    }

    /// `RSET` answered within a few seconds (an idle connection the
    /// server closed must not cost a whole `timeout`).
    async fn alive(&self, conn: &mut Session) -> bool {
        let check = tokio::time::timeout(ALIVE_CHECK.min(self.timeout), conn.cmd(b"RSET\r\n"));
        matches!(check.await, Ok(Ok(r)) if r.code == 250)
    }
}

pub struct SmtpTransmitter {
    server: Server,
    pool: Pool<Session>,
    from: Template,
    to: Option<Template>,
    cc: Option<Template>,
    bcc: Option<Template>,
    subject: Template,
    content_type: Option<Template>,
    /// `attach = true`: the attachment's name.
    attach: Option<Template>,
    text: Option<Template>,
    transfer_timeout: Duration,
    data_timeout: Duration,
}

impl std::fmt::Debug for SmtpTransmitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTransmitter")
            .field("server", &self.server.shown)
            .finish_non_exhaustive()
    }
}

/// What one mail is: rendered and checked before anything is sent.
struct Mail {
    from: Mailbox,
    to: Vec<Mailbox>,
    cc: Vec<Mailbox>,
    /// Every envelope recipient (to, cc, bcc), each once.
    recipients: Vec<String>,
    subject: String,
    content_type: String,
    attachment_name: Option<String>,
    text: Option<String>,
    message_id: String,
}

/// The recipients done, as the box keeps them between attempts.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Progress {
    /// Recipients the server took the mail for (250 after DATA).
    done: BTreeSet<String>,
}

impl Progress {
    fn of(msg: &Outbound) -> Progress {
        // Another adapter's (a port whose type changed): start over.
        msg.progress
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default()
    }

    fn to_text(&self) -> Option<String> {
        (!self.done.is_empty()).then(|| serde_json::to_string(self).unwrap_or_default())
    }
}

/// How the server answered each recipient of one attempt.
#[derive(Default)]
struct Answers {
    accepted: Vec<String>,
    /// 4xx: try again later.
    deferred: Vec<(String, String)>,
    /// 5xx: not to be sent as it is.
    refused: Vec<(String, String)>,
}

fn edit(e: Refused) -> TransmitError {
    TransmitError::needs_edit(e.0)
}

/// `text` cut to `max` characters.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// `a, b, c` (at most ten named, then how many more).
fn listed<'a>(names: impl ExactSizeIterator<Item = &'a String>) -> String {
    let n = names.len();
    let mut s: Vec<&str> = names.take(10).map(String::as_str).collect();
    let more;
    if n > 10 {
        more = format!("and {} more", n - 10);
        s.push(&more);
    }
    s.join(", ")
}

impl SmtpTransmitter {
    fn render(&self, key: &str, t: &Template, msg: &Outbound) -> Result<String, TransmitError> {
        let v = t.render_text(msg.id, &msg.context).map_err(TransmitError::from)?;
        mail::header_value(key, &v).map_err(edit)?;
        Ok(v)
    }

    fn list(&self, key: &str, t: &Option<Template>, msg: &Outbound) -> Result<Vec<Mailbox>, TransmitError> {
        match t {
            Some(t) => mail::mailboxes(key, &self.render(key, t, msg)?).map_err(edit),
            None => Ok(Vec::new()),
        }
    }

    fn mail(&self, msg: &Outbound) -> Result<Mail, TransmitError> {
        let mut from = mail::mailboxes("from", &self.render("from", &self.from, msg)?).map_err(edit)?;
        let from = match (from.pop(), from.is_empty()) {
            (Some(f), true) => f,
            _ => return Err(TransmitError::needs_edit("from must be one address")),
        };
        let (to, cc, bcc) = (
            self.list("to", &self.to, msg)?,
            self.list("cc", &self.cc, msg)?,
            self.list("bcc", &self.bcc, msg)?,
        );
        let mut seen = BTreeSet::new();
        let recipients: Vec<String> = to
            .iter()
            .chain(&cc)
            .chain(&bcc)
            .map(|m| m.address.clone())
            .filter(|a| seen.insert(a.to_ascii_lowercase()))
            .collect();
        if recipients.is_empty() {
            return Err(TransmitError::needs_edit(
                "the mail has no recipient (to, cc and bcc are empty for this message)",
            ));
        }
        if recipients.len() > mail::MAX_RECIPIENTS {
            return Err(TransmitError::needs_edit(format!(
                "the mail has {} recipients, more than {} (split the list)",
                recipients.len(),
                mail::MAX_RECIPIENTS
            )));
        }
        let content_type = match &self.content_type {
            Some(t) => self.render("content_type", t, msg)?,
            None => [("mail", "content_type"), ("http", "content_type")]
                .iter()
                .find_map(|(ns, name)| msg.context.get(ns, name).map(|p| p.value.to_text()))
                .unwrap_or_else(|| "text/plain; charset=utf-8".into()),
        };
        let content_type = mail::body_content_type("content_type", &content_type).map_err(edit)?;
        let attachment_name = match &self.attach {
            Some(t) => Some(mail::attachment_name(&self.render("attachment_name", t, msg)?)),
            None => None,
        };
        let text = match &self.text {
            Some(t) => Some(t.render_text(msg.id, &msg.context).map_err(TransmitError::from)?),
            None => None,
        };
        let domain = from.address.rsplit_once('@').map_or("sluice.invalid", |(_, d)| d);
        Ok(Mail {
            message_id: format!("{}@{domain}", msg.id),
            subject: self.render("subject", &self.subject, msg)?,
            from,
            to,
            cc,
            recipients,
            content_type,
            attachment_name,
            text,
        })
    }

    async fn send(&self, msg: &Outbound, body: Body, others: Vec<OtherPart>) -> Result<Delivered, TransmitError> {
        if others.len() > mail::MAX_ATTACHMENTS {
            return Err(TransmitError::needs_edit(format!(
                "the message has {} parts; a mail takes at most {} attachments",
                others.len() + 1,
                mail::MAX_ATTACHMENTS
            )));
        }
        let mail = self.mail(msg)?;
        let mut progress = Progress::of(msg);
        let pending: Vec<&String> = mail
            .recipients
            .iter()
            .filter(|r| !progress.done.contains(r.as_str()))
            .collect();
        if pending.is_empty() {
            // Every recipient took it on an earlier attempt.
            return Ok(Delivered::AlreadyThere(format!(
                "{} Message-ID <{}> to {}",
                self.server.shown,
                mail.message_id,
                listed(mail.recipients.iter())
            )));
        }
        let mut lent = self.pool.take(&self.server).await.map_err(TransmitError::retry)?;
        let attempt = tokio::time::timeout(
            self.transfer_timeout,
            self.transaction(&mut lent.conn, &mail, &pending, body, others),
        )
        .await;
        let (answers, final_answer) = match attempt {
            Ok(Ok(done)) => {
                self.pool.put(lent);
                done
            }
            // The connection's state is not known: it is dropped.
            Ok(Err(e)) => return Err(e.with_progress(progress.to_text())),
            Err(_) => {
                return Err(TransmitError::retry(format!(
                    "sending the mail to {}: not done within transfer_timeout ({:?})",
                    self.server.shown, self.transfer_timeout
                ))
                .with_progress(progress.to_text()));
            }
        };
        progress.done.extend(answers.accepted.iter().cloned());
        let shown = format!("{} Message-ID <{}>", self.server.shown, mail.message_id);
        // At most ten named, each answer cut short: the text goes into the
        // box's records of the attempt.
        let told = |list: &[(String, String)]| {
            let mut s: Vec<String> = list
                .iter()
                .take(10)
                .map(|(r, why)| format!("{r}: {}", shorten(why, 200)))
                .collect();
            if list.len() > 10 {
                s.push(format!("and {} more", list.len() - 10));
            }
            s.join("; ")
        };
        let delivered = || {
            if progress.done.is_empty() {
                String::new()
            } else {
                format!(" (delivered to {})", listed(progress.done.iter()))
            }
        };
        if !answers.deferred.is_empty() {
            let refused = if answers.refused.is_empty() {
                String::new()
            } else {
                format!(
                    "; it refused {} for good, {}",
                    answers.refused.len(),
                    told(&answers.refused)
                )
            };
            return Err(TransmitError::retry(format!(
                "{shown}: the server put off {} recipient(s), {}{refused}{}",
                answers.deferred.len(),
                told(&answers.deferred),
                delivered()
            ))
            .with_progress(progress.to_text()));
        }
        if !answers.refused.is_empty() {
            return Err(TransmitError::fatal(format!(
                "{shown}: the server refused {} recipient(s), {}{}; resuming sends to the refused only",
                answers.refused.len(),
                told(&answers.refused),
                delivered()
            ))
            .with_progress(progress.to_text()));
        }
        Ok(Delivered::To(format!(
            "{shown} to {}: {}",
            listed(answers.accepted.iter()),
            final_answer
        )))
    }

    /// One SMTP transaction for `pending`: the answers to each recipient
    /// and the server's final answer. An `Err` leaves the connection in an
    /// unknown state.
    async fn transaction(
        &self,
        c: &mut Session,
        mail: &Mail,
        pending: &[&String],
        body: Body,
        others: Vec<OtherPart>,
    ) -> Result<(Answers, String), TransmitError> {
        let s = &self.server;
        let cmd = |doing: &'static str, e: mail_send::Error| TransmitError::retry(s.failed(doing, e));
        let r = c
            .cmd(format!("MAIL FROM:<{}>\r\n", mail.from.address))
            .await
            .map_err(|e| cmd("MAIL FROM", e))?;
        match r.code {
            250 => {}
            400..=499 => return Err(TransmitError::retry(s.failed("MAIL FROM", said(&r)))),
            _ => {
                return Err(TransmitError::fatal(
                    s.failed(&format!("MAIL FROM:<{}>", mail.from.address), said(&r)),
                ));
            }
        }
        let mut answers = Answers::default();
        for rcpt in pending {
            let r = c
                .cmd(format!("RCPT TO:<{rcpt}>\r\n"))
                .await
                .map_err(|e| cmd("RCPT TO", e))?;
            match r.code {
                250 | 251 => answers.accepted.push(rcpt.to_string()),
                400..=499 => answers.deferred.push((rcpt.to_string(), said(&r))),
                _ => answers.refused.push((rcpt.to_string(), said(&r))),
            }
        }
        if answers.accepted.is_empty() {
            // Nothing to send: end the transaction, keep the connection.
            let r = c.cmd(b"RSET\r\n").await.map_err(|e| cmd("RSET", e))?;
            if r.code != 250 {
                return Err(TransmitError::retry(s.failed("RSET", said(&r))));
            }
            return Ok((answers, String::new()));
        }
        let r = c.cmd(b"DATA\r\n").await.map_err(|e| cmd("DATA", e))?;
        if r.code != 354 {
            let e = s.failed("DATA", said(&r));
            return Err(if (400..500).contains(&r.code) {
                TransmitError::retry(e)
            } else {
                TransmitError::fatal(e)
            });
        }
        // The content, then its end. A body that fails to read ends the
        // connection without the end mark: the server discards what came.
        let headers = Headers {
            from: &mail.from,
            to: &mail.to,
            cc: &mail.cc,
            subject: &mail.subject,
            message_id: &mail.message_id,
            date: time::OffsetDateTime::now_utc().unix_timestamp(),
        };
        let layout = Layout {
            content_type: &mail.content_type,
            attach_as: mail.attachment_name.as_deref(),
            text: mail.text.as_deref(),
        };
        let attachments = others
            .into_iter()
            .map(|p| Attachment {
                name: p.name,
                body: p.body,
            })
            .collect();
        let boundary = format!("=_sluice_{}", mail.message_id.split('@').next().unwrap_or("part"));
        let mut out = WriteTimeout::new(&mut c.stream, s.timeout);
        mail::write_mail(&mut out, &headers, &layout, body, attachments, &boundary)
            .await
            .map_err(|e| TransmitError::retry(s.failed("sending the mail", e)))?;
        out.write_all(b".\r\n")
            .await
            .map_err(|e| TransmitError::retry(s.failed("ending the mail", e)))?;
        out.flush()
            .await
            .map_err(|e| TransmitError::retry(s.failed("ending the mail", e)))?;
        let r = tokio::time::timeout(self.data_timeout, c.read())
            .await
            .map_err(|_| {
                TransmitError::retry(s.failed(
                    "waiting for the answer to the mail",
                    format!("none within data_timeout ({:?})", self.data_timeout),
                ))
            })?
            .map_err(|e| cmd("reading the answer to the mail", e))?;
        match r.code {
            250 => Ok((answers, said(&r))),
            400..=499 => {
                // The mail was not taken for anyone: each accepted
                // recipient is put off with it.
                let why = said(&r);
                for a in answers.accepted.drain(..) {
                    answers.deferred.push((a, why.clone()));
                }
                Ok((answers, why))
            }
            _ => Err(TransmitError::fatal(s.failed("sending the mail", said(&r)))),
        }
    }
}

#[async_trait]
impl Transmitter for SmtpTransmitter {
    async fn transmit(&self, msg: &Outbound, body: Body) -> Result<Delivered, TransmitError> {
        self.send(msg, body, Vec::new()).await
    }

    fn sends_all_parts(&self) -> bool {
        true
    }

    async fn transmit_all(
        &self,
        msg: &Outbound,
        body: Body,
        others: Vec<OtherPart>,
    ) -> Result<Delivered, TransmitError> {
        self.send(msg, body, others).await
    }
}
