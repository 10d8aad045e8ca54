//! The node's control socket, `control.sock` in the data directory: how
//! `sluice reload` asks a running node to load a configuration file and
//! hears what it did.
//!
//! One request per connection, one JSON line each way:
//! `{"reload":"/abs/path/sluice.toml"}` → a [`ReloadOutcome`]. The socket
//! is the node's alone: it is created mode 0600, and a peer running as
//! another user (other than root) is refused, since a configuration decides
//! what the node reads and writes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use crate::node::ReloadOutcome;

/// The socket's file name in the data directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// The longest request line read (a path).
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 4;

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    /// Load this configuration file (an absolute path).
    reload: PathBuf,
}

/// A reload asked for by a client, and where its outcome goes.
pub(crate) struct ReloadRequest {
    pub(crate) path: PathBuf,
    pub(crate) answer: oneshot::Sender<ReloadOutcome>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no node answers on {path}: {error} (is `sluice serve` running with this data directory? \
         to reload a node without its socket, send it SIGHUP)"
    )]
    NoNode { path: PathBuf, error: std::io::Error },
    #[error("talking to the node on {path}: {message}")]
    Talk { path: PathBuf, message: String },
}

/// The socket of the node whose data directory is `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONTROL_SOCKET)
}

/// Listen on the data directory's control socket (the node holds the data
/// directory's lock: an old socket file there is stale).
pub(crate) fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve the socket until `stop`: each request goes to `requests`, each
/// answer back to its client.
pub(crate) async fn serve(listener: UnixListener, requests: mpsc::Sender<ReloadRequest>, stop: CancellationToken) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    // geteuid(2) cannot fail and touches no memory.
    let own_uid = unsafe { libc::geteuid() };
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let requests = requests.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == own_uid || cred.uid() == 0 => {}
                Ok(cred) => {
                    tracing::warn!(
                        peer_uid = cred.uid(),
                        "control socket: refused a client running as another user"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: cannot tell who the client is; refused");
                    return;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = answer(stream, requests) => {}
            }
        });
    }
}

async fn answer(stream: UnixStream, requests: mpsc::Sender<ReloadRequest>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST);
    let outcome = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Err(_) => refused("the request did not arrive in time"),
        Ok(Err(e)) => refused(&format!("cannot read the request: {e}")),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim_end()) {
            Err(e) => refused(&format!("not a request this node understands: {e}")),
            Ok(req) if !req.reload.is_absolute() => refused("the configuration path must be absolute"),
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                let asked = ReloadRequest {
                    path: req.reload,
                    answer: tx,
                };
                if requests.send(asked).await.is_err() {
                    refused("the node is stopping")
                } else {
                    rx.await.unwrap_or_else(|_| refused("the node is stopping"))
                }
            }
        },
    };
    let mut text = serde_json::to_vec(&outcome).unwrap_or_default();
    text.push(b'\n');
    if let Err(e) = write.write_all(&text).await {
        tracing::debug!(error = %e, "control socket: the client left before its answer");
    }
}

fn refused(why: &str) -> ReloadOutcome {
    ReloadOutcome {
        errors: vec![why.to_string()],
        ..ReloadOutcome::default()
    }
}

/// Ask the node of `data_dir` to load the configuration file `config`
/// (made absolute here), and wait for what it did.
pub async fn request_reload(data_dir: &Path, config: &Path) -> Result<ReloadOutcome, ControlError> {
    let path = socket_path(data_dir);
    let talk = |message: String| ControlError::Talk {
        path: path.clone(),
        message,
    };
    let config = std::path::absolute(config).map_err(|e| talk(format!("cannot make the path absolute: {e}")))?;
    let mut stream = UnixStream::connect(&path).await.map_err(|error| ControlError::NoNode {
        path: path.clone(),
        error,
    })?;
    let mut text = serde_json::to_vec(&Request { reload: config }).map_err(|e| talk(e.to_string()))?;
    text.push(b'\n');
    stream
        .write_all(&text)
        .await
        .map_err(|e| talk(format!("cannot send the request: {e}")))?;
    // The answer is one bounded line (a list of changes and errors).
    let mut line = String::new();
    BufReader::new(stream)
        .take(16 << 20)
        .read_line(&mut line)
        .await
        .map_err(|e| talk(format!("cannot read the answer: {e}")))?;
    if line.is_empty() {
        return Err(talk(
            "the node closed the connection without an answer (it may be stopping)".into(),
        ));
    }
    serde_json::from_str(line.trim_end()).map_err(|e| talk(format!("the answer does not parse: {e}")))
}
