//! A POP3 client (RFC 1939, `CAPA` of RFC 2449, `STLS` of RFC 2595) that
//! streams a mail (`RETR`) instead of holding it: the crates at hand read a
//! whole mail into memory. Only what a receive location needs: log in,
//! `UIDL`, `LIST n`, `RETR n`, `DELE n`, `QUIT`.
//!
//! Every answer is waited for within the session's `timeout`, every line is
//! capped ([`MAX_LINE`]), a `UIDL` listing keeps at most the number asked
//! for, and a mail is read only up to what `LIST` said it has (plus
//! [`SLACK`]): a server cannot make the client hold or store more than it
//! announced.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_rustls::rustls;

use crate::support::secret::Secret;
use crate::support::tls::StartTls;

/// Longest answer line taken (RFC 1939 allows 512 bytes; some servers say
/// more in an error).
pub const MAX_LINE: usize = 8 * 1024;

/// How much longer than `LIST` said a mail may come out, besides a 32nd of
/// its size (servers count octets slightly differently: a server that
/// stores bare line ends may count one byte a line short).
pub const SLACK: u64 = 64 * 1024;

/// The least time a `UIDL` listing is given (else ten times `timeout`).
const MIN_LISTING_TIME: Duration = Duration::from_secs(60);

/// Longest unique id (RFC 1939: 1 to 70 characters).
const MAX_UIDL: usize = 70;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `pop3s://`: TLS from the first byte.
    Implicit,
    /// `pop3://`, upgraded with `STLS` as the setting says.
    Plain(StartTls),
}

/// Where and how to log in.
pub struct Connect {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub tls: Arc<rustls::ClientConfig>,
    pub user: String,
    pub password: Secret,
    /// TCP, the greeting and the TLS handshake.
    pub connect_timeout: Duration,
    /// Each answer, and each read of a mail.
    pub timeout: Duration,
    /// The server as logs name it (`pop3s://host:port`).
    pub shown: String,
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum Pop3Error {
    /// The server could not be reached or stopped answering: try later.
    #[error("{0}")]
    Connect(String),
    /// The server refused the login, or it cannot be done safely: a
    /// setting or the account needs attention.
    #[error("{0}")]
    Login(String),
    /// The server refused a command (`-ERR`), with its words.
    #[error("{0}")]
    Refused(String),
    /// The server said something that is not POP3.
    #[error("{0}")]
    Protocol(String),
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A logged-in session.
pub struct Session {
    io: BufReader<Box<dyn Io>>,
    timeout: Duration,
    shown: String,
}

/// The server's words, capped and made printable, for an error.
fn said(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text: String = text
        .trim_end()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut text = text;
    if text.len() > 512 {
        let mut end = 512;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// One answer line, `+OK`/`-ERR` told apart.
enum Answer {
    Ok(Vec<u8>),
    Err(Vec<u8>),
}

/// Read one line of at most [`MAX_LINE`] bytes, without its line end.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, timeout: Duration) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let read = async {
        loop {
            let buf = r.fill_buf().await?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            let (take, end) = match memchr(b'\n', buf) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an answer line longer than {MAX_LINE} bytes"),
                ));
            }
            line.extend_from_slice(&buf[..take]);
            r.consume(take);
            if end {
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                return Ok(());
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(())) => Ok(line),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )),
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

fn answer(line: Vec<u8>) -> Result<Answer, Vec<u8>> {
    if line.starts_with(b"+OK") {
        Ok(Answer::Ok(line))
    } else if line.starts_with(b"-ERR") {
        Ok(Answer::Err(line))
    } else {
        Err(line)
    }
}

impl Session {
    /// Connect, protect the connection as `c.security` says, log in.
    pub async fn open(c: &Connect) -> Result<Session, Pop3Error> {
        let connect = |e: String| Pop3Error::Connect(e);
        let tcp = crate::support::remote::connect(&c.host, c.port, c.connect_timeout, c.timeout, &c.shown)
            .await
            .map_err(connect)?;
        let implicit = c.security == Security::Implicit;
        let stream: Box<dyn Io> = if implicit {
            Box::new(tls(c, tcp).await?)
        } else {
            Box::new(tcp)
        };
        let mut s = Session {
            io: BufReader::new(stream),
            timeout: c.connect_timeout,
            shown: c.shown.clone(),
        };
        s.expect_ok("waiting for the greeting").await?;
        s.timeout = c.timeout;
        let mut secure = implicit;
        if let Security::Plain(starttls) = c.security
            && starttls != StartTls::Off
        {
            let offered = s.capabilities().await?.iter().any(|l| l.eq_ignore_ascii_case("STLS"));
            match (offered, starttls) {
                (true, _) => {
                    s.send("STLS").await?;
                    s.expect_ok("STLS").await.map_err(|e| match e {
                        Pop3Error::Refused(m) => Pop3Error::Login(m),
                        e => e,
                    })?;
                    s = s.upgrade(c).await?;
                    secure = true;
                }
                (false, StartTls::Required) => {
                    return Err(Pop3Error::Login(format!(
                        "{} does not offer STLS (TLS); starttls = \"required\" (use pop3s:// for TLS from the first \
                         byte, or starttls = \"off\" on a network you trust)",
                        c.shown
                    )));
                }
                (false, _) => {}
            }
        }
        if !secure && c.security != Security::Plain(StartTls::Off) {
            return Err(Pop3Error::Login(format!(
                "the connection to {} is not encrypted (the server offers no STLS); the password is not sent in \
                 clear unless starttls = \"off\"",
                c.shown
            )));
        }
        s.login(c).await?;
        Ok(s)
    }

    async fn upgrade(self, c: &Connect) -> Result<Session, Pop3Error> {
        // Nothing may be buffered past the `+OK` of STLS (a server that
        // pipelines before the handshake is refused).
        if !self.io.buffer().is_empty() {
            return Err(Pop3Error::Protocol(format!(
                "{} sent data after its STLS answer, before the TLS handshake",
                self.shown
            )));
        }
        let plain = self.io.into_inner();
        let stream: Box<dyn Io> = Box::new(tls_over(c, plain).await?);
        Ok(Session {
            io: BufReader::new(stream),
            timeout: self.timeout,
            shown: self.shown,
        })
    }

    async fn login(&mut self, c: &Connect) -> Result<(), Pop3Error> {
        let refused = |e: Pop3Error| match e {
            Pop3Error::Refused(m) => Pop3Error::Login(m),
            e => e,
        };
        if c.user.contains(['\r', '\n']) || c.password.expose().contains(['\r', '\n']) {
            return Err(Pop3Error::Login("the user name or password holds a line break".into()));
        }
        self.send(&format!("USER {}", c.user)).await?;
        self.expect_ok("USER").await.map_err(refused)?;
        // Not through `send`: nothing that could log the line.
        let line = format!("PASS {}\r\n", c.password.expose());
        self.write(line.as_bytes(), "PASS").await?;
        self.expect_ok("logging in (PASS)").await.map_err(refused)?;
        Ok(())
    }

    fn failed(&self, doing: &str, e: impl std::fmt::Display) -> Pop3Error {
        Pop3Error::Connect(format!("{doing} at {}: {e}", self.shown))
    }

    async fn write(&mut self, bytes: &[u8], doing: &str) -> Result<(), Pop3Error> {
        let write = async {
            let io = self.io.get_mut();
            io.write_all(bytes).await?;
            io.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.failed(doing, e)),
            Err(_) => Err(self.failed(doing, format!("could not send within {:?}", self.timeout))),
        }
    }

    async fn send(&mut self, command: &str) -> Result<(), Pop3Error> {
        let doing = command.split(' ').next().unwrap_or(command).to_string();
        self.write(format!("{command}\r\n").as_bytes(), &doing).await
    }

    async fn line(&mut self, doing: &str) -> Result<Vec<u8>, Pop3Error> {
        let timeout = self.timeout;
        read_line(&mut self.io, timeout)
            .await
            .map_err(|e| self.failed(doing, e))
    }

    /// An answer that must be `+OK`: its line.
    async fn expect_ok(&mut self, doing: &str) -> Result<Vec<u8>, Pop3Error> {
        let line = self.line(doing).await?;
        match answer(line) {
            Ok(Answer::Ok(line)) => Ok(line),
            Ok(Answer::Err(line)) => Err(Pop3Error::Refused(format!(
                "{doing} at {}: the server said {}",
                self.shown,
                said(&line)
            ))),
            Err(line) => Err(Pop3Error::Protocol(format!(
                "{doing} at {}: not a POP3 answer: {}",
                self.shown,
                said(&line)
            ))),
        }
    }

    /// The lines of a multi-line answer, one at a time, to the lone `.`.
    async fn next_listed(&mut self, doing: &str) -> Result<Option<Vec<u8>>, Pop3Error> {
        let line = self.line(doing).await?;
        if line == b"." {
            return Ok(None);
        }
        Ok(Some(match line.strip_prefix(b".") {
            Some(rest) => rest.to_vec(),
            None => line,
        }))
    }

    /// `CAPA`: the capabilities the server names (none when it lacks CAPA).
    async fn capabilities(&mut self) -> Result<Vec<String>, Pop3Error> {
        self.send("CAPA").await?;
        match self.expect_ok("CAPA").await {
            Ok(_) => {}
            Err(Pop3Error::Refused(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        let mut caps = Vec::new();
        while let Some(line) = self.next_listed("CAPA").await? {
            if caps.len() < 100 {
                caps.push(said(&line));
            }
        }
        Ok(caps)
    }

    /// `UIDL`: (message number, unique id) of the mails, at most `max` (the
    /// rest read and dropped), the whole listing within ten times the
    /// session's `timeout` (at least a minute); lines that are not `n id`
    /// are skipped.
    /// Returns the list and how many mails there were in all.
    pub async fn uidl(&mut self, max: usize) -> Result<(Vec<(u32, String)>, usize), Pop3Error> {
        self.send("UIDL").await?;
        self.expect_ok("UIDL").await?;
        let mut found = Vec::new();
        let mut all = 0;
        // A listing that never ends would hold the session for ever.
        let deadline = tokio::time::Instant::now() + self.timeout.saturating_mul(10).max(MIN_LISTING_TIME);
        while let Some(line) = self.next_listed("UIDL").await? {
            if tokio::time::Instant::now() > deadline {
                return Err(self.failed("UIDL", "the listing did not end in time"));
            }
            all += 1;
            if found.len() >= max {
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let mut words = text.split_ascii_whitespace();
            let (Some(n), Some(uid), None) = (words.next(), words.next(), words.next()) else {
                continue;
            };
            let valid = uid.len() <= MAX_UIDL && uid.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if let (Ok(n), true) = (n.parse::<u32>(), valid) {
                found.push((n, uid.to_string()));
            }
        }
        Ok((found, all))
    }

    /// `LIST n`: the mail's size in octets; `None` if there is no such mail.
    pub async fn size(&mut self, n: u32) -> Result<Option<u64>, Pop3Error> {
        self.send(&format!("LIST {n}")).await?;
        let line = match self.expect_ok("LIST").await {
            Ok(line) => line,
            Err(Pop3Error::Refused(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let text = String::from_utf8_lossy(&line);
        let size = text.split_ascii_whitespace().nth(2).and_then(|s| s.parse::<u64>().ok());
        match size {
            Some(size) => Ok(Some(size)),
            None => Err(Pop3Error::Protocol(format!(
                "LIST {n} at {}: no size in {}",
                self.shown,
                said(&line)
            ))),
        }
    }

    /// `RETR n`: the mail, as it streams, no more than `size` and a 32nd,
    /// plus [`SLACK`] bytes (more is an error of kind `InvalidData`). `None` if there is no such mail. The session can be used
    /// again only once the mail was read to its end
    /// ([`Retr::finished`]).
    pub async fn retr(&mut self, n: u32, size: u64) -> Result<Option<Retr<'_>>, Pop3Error> {
        self.send(&format!("RETR {n}")).await?;
        match self.expect_ok("RETR").await {
            Ok(_) => {}
            Err(Pop3Error::Refused(_)) => return Ok(None),
            Err(e) => return Err(e),
        }
        let timeout = self.timeout;
        Ok(Some(Retr {
            session: self,
            limit: size.saturating_add(size / 32).saturating_add(SLACK),
            read: 0,
            state: RetrState::LineStart,
            timeout,
        }))
    }

    /// `DELE n`: marked; gone when the session ends with [`quit`](Self::quit).
    pub async fn delete(&mut self, n: u32) -> Result<(), Pop3Error> {
        self.send(&format!("DELE {n}")).await?;
        self.expect_ok("DELE").await.map(|_| ())
    }

    /// `QUIT`: the server deletes what was marked. Only its `+OK` says the
    /// deletions happened.
    pub async fn quit(mut self) -> Result<(), Pop3Error> {
        self.send("QUIT").await?;
        self.expect_ok("QUIT").await.map(|_| ())
    }
}

async fn tls(
    c: &Connect,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<Box<dyn Io>>, Pop3Error> {
    tls_over(c, Box::new(tcp)).await
}

async fn tls_over(c: &Connect, stream: Box<dyn Io>) -> Result<tokio_rustls::client::TlsStream<Box<dyn Io>>, Pop3Error> {
    let connect = |e: String| Pop3Error::Connect(format!("the TLS handshake with {}: {e}", c.shown));
    let name = rustls::pki_types::ServerName::try_from(c.host.clone()).map_err(|e| connect(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(c.tls.clone());
    match tokio::time::timeout(c.connect_timeout, connector.connect(name, stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(connect(e.to_string())),
        Err(_) => Err(connect(format!("no answer within {:?}", c.connect_timeout))),
    }
}

/// Where the reader of a `RETR` is in its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetrState {
    /// At the start of a line (a `.` here is stuffing or the end).
    LineStart,
    /// Inside a line.
    InLine,
    /// The lone `.` was read: the mail is whole.
    Ended,
}

/// A mail being read (`RETR`): its lines, unstuffed, to the lone `.`.
/// [`chunk`](Self::chunk) hands on a piece at a time.
pub struct Retr<'s> {
    session: &'s mut Session,
    limit: u64,
    read: u64,
    state: RetrState,
    timeout: Duration,
}

/// Bytes handed on at a time.
const PIECE: usize = 64 * 1024;

impl Retr<'_> {
    /// The next piece of the mail; `None` at its end (the lone `.`).
    pub async fn chunk(&mut self) -> io::Result<Option<Bytes>> {
        if self.state == RetrState::Ended {
            return Ok(None);
        }
        let mut out = BytesMut::new();
        let timeout = self.timeout;
        while out.len() < PIECE && self.state != RetrState::Ended {
            let line = read_raw_line(&mut self.session.io, timeout).await?;
            self.take_line(&line, &mut out)?;
        }
        self.read += out.len() as u64;
        if self.read > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the mail is longer than LIST said (more than {} bytes)", self.limit),
            ));
        }
        if out.is_empty() && self.state == RetrState::Ended {
            return Ok(None);
        }
        Ok(Some(out.freeze()))
    }

    /// Add one raw piece of a line (with its line end, if it has one).
    fn take_line(&mut self, piece: &[u8], out: &mut BytesMut) -> io::Result<()> {
        let ends = piece.ends_with(b"\n");
        let mut body = piece;
        if self.state == RetrState::LineStart && body.first() == Some(&b'.') {
            if body == b".\r\n" || body == b".\n" {
                self.state = RetrState::Ended;
                return Ok(());
            }
            body = &body[1..];
        }
        out.extend_from_slice(body);
        self.state = if ends { RetrState::LineStart } else { RetrState::InLine };
        Ok(())
    }
}

/// Up to one line of what is buffered (a long line comes in several
/// pieces), with its line end if it is in it; never fewer than 3 bytes
/// unless the line ends sooner, so that a piece can tell the lone `.` from
/// a stuffed one.
async fn read_raw_line<R: AsyncBufRead + Unpin>(r: &mut R, timeout: Duration) -> io::Result<Vec<u8>> {
    let fill = async {
        let mut piece = Vec::new();
        loop {
            let buf = r.fill_buf().await?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection in the middle of the mail",
                ));
            }
            let (take, ends) = memchr(b'\n', buf).map_or((buf.len(), false), |i| (i + 1, true));
            piece.extend_from_slice(&buf[..take]);
            r.consume(take);
            if ends || piece.len() >= 3 {
                return Ok(piece);
            }
        }
    };
    match tokio::time::timeout(timeout, fill).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the mail stalled: nothing within {timeout:?}"),
        )),
    }
}
