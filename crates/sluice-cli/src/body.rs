//! `sluice messages body` and `sluice suspended body`: one part of a
//! message, streamed from the box to standard output or to a file, in
//! bounded memory whatever its size. The work is [`sluice_ops::body`], or
//! a node's REST API (`--server`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use sluice_host::Config;
use sluice_ops::body::{self, Body, BodyOf};

use crate::remote::{Download, Remote};
use crate::store::open_read;

/// Which part, and where to.
#[derive(Args, Debug, Clone)]
pub struct BodyArgs {
    /// The part: its number in `show` (0, the body, unless given).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub part: usize,
    /// Write it to FILE instead of standard output: whole or not at all
    /// (written to a temporary name beside it, renamed when complete);
    /// `-` is standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Where pieces of a part come from: the box, or a node's REST API.
trait Pieces {
    /// The next piece, `None` at the end (checked whole).
    async fn piece(&mut self) -> anyhow::Result<Option<bytes::Bytes>>;
    /// Bytes read so far.
    fn read(&self) -> u64;
    /// The part's size, if known.
    fn size(&self) -> Option<u64>;
}

impl Pieces for Body {
    async fn piece(&mut self) -> anyhow::Result<Option<bytes::Bytes>> {
        Ok(self.next().await?)
    }
    fn read(&self) -> u64 {
        Body::read(self)
    }
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }
}

impl Pieces for Download {
    async fn piece(&mut self) -> anyhow::Result<Option<bytes::Bytes>> {
        self.next().await
    }
    fn read(&self) -> u64 {
        Download::read(self)
    }
    fn size(&self) -> Option<u64> {
        self.size
    }
}

/// Write the part out; an error says how far it got. On standard output a
/// reader that goes away (`| head -c 100`) ends the command quietly.
pub async fn write(config: &Config, of: BodyOf, args: &BodyArgs) -> anyhow::Result<()> {
    let b = open_read(config)?;
    let mut part = body::open(b, of, Some(args.part)).await?;
    let what = format!("part {} `{}` of message {}", part.index, part.name, part.message_id);
    out_to(&mut part, args, &what).await
}

/// The same through a node's REST API (`GET .../parts/N`), streamed.
pub async fn write_remote(r: &Remote, of: BodyOf, args: &BodyArgs) -> anyhow::Result<()> {
    let (path, what) = match of {
        BodyOf::Message(id) => (
            format!("/api/v1/messages/{id}/parts/{}", args.part),
            format!("message {id}"),
        ),
        BodyOf::Suspended(id) => (
            format!("/api/v1/suspended/{id}/parts/{}", args.part),
            format!("suspended entry #{id}"),
        ),
    };
    let doing = format!("reading part {} of {what}", args.part);
    let mut part = r.download(&path, &doing).await?;
    out_to(&mut part, args, &format!("part {} of {what}", args.part)).await
}

async fn out_to(part: &mut impl Pieces, args: &BodyArgs, what: &str) -> anyhow::Result<()> {
    match args.output.as_deref().filter(|p| *p != Path::new("-")) {
        None => to_stdout(part).await,
        Some(path) => {
            let written = to_file(part, path).await?;
            outln!("wrote {written} bytes ({what}) to {}", path.display());
            Ok(())
        }
    }
}

async fn to_stdout(body: &mut impl Pieces) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    while let Some(piece) = next(body).await? {
        out.write_all(&piece).context("writing the body to standard output")?;
    }
    out.flush().context("writing the body to standard output")?;
    Ok(())
}

/// The next piece; Ctrl-C stops the reading (so that a file being written
/// is cleaned up, not left behind).
async fn next(body: &mut impl Pieces) -> anyhow::Result<Option<bytes::Bytes>> {
    tokio::select! {
        piece = body.piece() => piece,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!(
            "interrupted after {} of {} bytes",
            body.read(),
            body.size().map_or_else(|| "?".to_string(), |s| s.to_string())
        )),
    }
}

/// Write to a temporary file beside `path` (a hidden name), sync it, and
/// rename it to `path` only once every byte is there and checked; on any
/// failure the temporary file is removed and `path` is left as it was.
async fn to_file(body: &mut impl Pieces, path: &Path) -> anyhow::Result<u64> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".sluice-part-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut file = Temporary::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let doing = || format!("writing {}", tmp.display());
    while let Some(piece) = next(body).await? {
        file.file.write_all(&piece).with_context(doing)?;
    }
    file.file.sync_all().with_context(doing)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    file.kept = true;
    Ok(body.read())
}

/// A file that is removed when dropped, unless kept.
struct Temporary {
    file: std::fs::File,
    path: PathBuf,
    kept: bool,
}

impl Temporary {
    fn create(path: &Path) -> std::io::Result<Temporary> {
        let file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Temporary {
            file,
            path: path.to_path_buf(),
            kept: false,
        })
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
