//! Pipelines: what happens to a message body between an adapter and the box.
//!
//! A receive pipeline takes one inbound body and context and emits one or
//! more messages (decode → disassemble → validate → promote); a send pipeline
//! wraps an outbound body (assemble → encode). Built: the decode stage (gzip,
//! zstd, with a cap on the decompressed size), the disassemble stage (XML,
//! JSON, CSV, lines; promoting from element paths, JSON pointers or columns
//! as it splits; CSV and lines can batch records), the validate
//! stage (a rule over each record's properties), and the encode stage (gzip,
//! zstd, with a level).
//!
//! A pipeline with a disassembler turns one body into an *interchange* of
//! records ([`Emit::record`]); the publisher makes the whole interchange
//! visible at once. A bad record ends the interchange with an error (it is
//! then suspended whole), or, with `recoverable = true`, is handed to
//! [`Emit::bad_record`] to be suspended alone while the rest goes on.
//!
//! Architecture Invariant: bodies are streams. A pipeline component reads
//! and writes [`Body`] streams; memory per message is bounded by a chunk, not
//! by the message. A component that needs the whole document must say so and
//! carry a size cap and a concurrency limit.

pub mod assemble;
mod bounded;
mod codec;
mod config;
mod csv;
pub mod disassemble;
mod json;
mod lines;
mod xml;

use async_trait::async_trait;
use sluice_model::Context;
use tokio::io::AsyncRead;

pub use crate::assemble::{AssembleConfig, JsonAssembleConfig, XmlAssembleConfig};
pub use crate::codec::{decoder, is_window_refusal};
pub use crate::config::{
    ByteSize, CsvDisassembleConfig, DEFAULT_WINDOW_LOG_MAX, DecodeConfig, DisassembleConfig, EncodeConfig,
    GzipDecodeConfig, GzipEncodeConfig, JsonDisassembleConfig, LinesDisassembleConfig, ReceivePipelineConfig,
    SendPipelineConfig, ValidateConfig, XmlDisassembleConfig, ZstdDecodeConfig, ZstdEncodeConfig,
};
use crate::disassemble::{BadRecord, Record, RecordSink, SplitError, Stopped};

/// A message body on its way through: a byte stream.
pub type Body = Box<dyn AsyncRead + Send + Unpin>;

/// A failure inside a pipeline, saying where: which stage, which component,
/// and how far into the stream.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage} stage, component {component}: {message}")]
pub struct PipelineError {
    pub stage: &'static str,
    pub component: String,
    pub message: String,
}

/// Receives what a receive pipeline produces: one streamed message
/// ([`emit`](Self::emit)), or the records of an interchange.
#[async_trait]
pub trait Emit: Send {
    /// The one message made of the whole body (no disassembler).
    async fn emit(&mut self, context: Context, body: Body) -> Result<(), EmitError>;
    /// The next record of the interchange: one record of at most
    /// `max_record_size` bytes, or (csv, lines) a batch of them plus a header.
    async fn record(&mut self, context: Context, body: Vec<u8>) -> Result<(), EmitError>;
    /// A record that failed, in a recoverable interchange: to be suspended
    /// alone, with `error`, while the rest is published.
    async fn bad_record(&mut self, context: Context, body: Vec<u8>, error: PipelineError) -> Result<(), EmitError>;
}

/// Why an emitted message could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// A pipeline stage failed while the body streamed out of it: the
    /// content itself is bad, and trying again will not help.
    #[error(transparent)]
    Stage(PipelineError),
    /// The message could not be stored (disk full, a source failing...).
    #[error("{0}")]
    Store(String),
}

impl ReceiveError {
    /// The stage failure behind this error, if the content was refused by a
    /// stage (rather than failing to be read or stored).
    pub fn stage_failure(&self) -> Option<&PipelineError> {
        match self {
            ReceiveError::Pipeline(p) | ReceiveError::Emit(EmitError::Stage(p)) => Some(p),
            ReceiveError::Emit(EmitError::Store(_)) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Emit(#[from] EmitError),
}

#[async_trait]
pub trait ReceivePipeline: Send + Sync {
    /// Turn one inbound body into messages, handing each to `out`.
    async fn run(&self, context: Context, body: Body, out: &mut dyn Emit) -> Result<(), ReceiveError>;
    /// Whether this pipeline splits bodies into interchanges of records.
    fn disassembles(&self) -> bool;
}

pub trait SendPipeline: Send + Sync {
    /// Wrap the outbound body in this pipeline's stages (after assembly).
    fn wrap(&self, context: &Context, body: Body) -> Result<Body, PipelineError>;
    /// The assembler, if this port sends batches of messages as one document.
    fn assembler(&self) -> Option<&AssembleConfig>;
}

/// A receive pipeline of stages. With no stages it is pass-through: one
/// message out per body in, bytes unchanged.
pub struct StagedReceive {
    decode: Vec<DecodeConfig>,
    disassemble: Option<DisassembleConfig>,
    /// The validate stage's rule, parsed, and its text for errors.
    validate: Option<(sluice_model::Filter, String)>,
}

/// Records in flight between the splitting thread and the publisher: with
/// the one being split and the one being stored, a location holds at most
/// `RECORDS_IN_FLIGHT + 2` records of one document in memory.
const RECORDS_IN_FLIGHT: usize = 4;

enum Split {
    Record(Record),
    Bad(BadRecord),
}

struct ChannelSink(tokio::sync::mpsc::Sender<Split>);

impl RecordSink for ChannelSink {
    fn record(&mut self, record: Record) -> Result<(), Stopped> {
        self.0.blocking_send(Split::Record(record)).map_err(|_| Stopped)
    }
    fn bad_record(&mut self, record: BadRecord) -> Result<(), Stopped> {
        self.0.blocking_send(Split::Bad(record)).map_err(|_| Stopped)
    }
}

/// Promote what every record carries: its place in the interchange, and
/// what the disassembler found in it.
fn record_context(base: &Context, index: u64, properties: Vec<(String, sluice_model::Value)>) -> Context {
    let mut ctx = base.clone();
    ctx.promote("interchange", "sequence", index as i64);
    for (key, value) in properties {
        if let Ok(k) = disassemble::property_key(&key) {
            ctx.promote(&k.namespace, &k.name, value);
        }
    }
    ctx
}

impl StagedReceive {
    fn stage_error(
        &self,
        stage: &'static str,
        component: &str,
        index: u64,
        offset: u64,
        message: &str,
    ) -> PipelineError {
        PipelineError {
            stage,
            component: component.to_string(),
            message: format!("record {index} (at byte {offset}): {message}"),
        }
    }

    /// Take one record: validate it, and hand it on (or refuse it).
    async fn take(
        &self,
        base: &Context,
        item: Split,
        component: &str,
        recoverable: bool,
        out: &mut dyn Emit,
    ) -> Result<(), ReceiveError> {
        let (ctx, body, error) = match item {
            Split::Record(r) => {
                let ctx = record_context(base, r.index, r.properties);
                let error = match &self.validate {
                    Some((rule, text)) if !rule.matches(&ctx) => Some(self.stage_error(
                        "validate",
                        "rule",
                        r.index,
                        r.offset,
                        &format!("does not satisfy `{text}`"),
                    )),
                    _ => None,
                };
                (ctx, r.body, error)
            }
            Split::Bad(b) => {
                let error = self.stage_error("disassemble", component, b.index, b.offset, &b.message);
                (record_context(base, b.index, Vec::new()), b.body, Some(error))
            }
        };
        match error {
            None => Ok(out.record(ctx, body).await?),
            Some(e) if recoverable => Ok(out.bad_record(ctx, body, e).await?),
            Some(e) => Err(ReceiveError::Pipeline(e)),
        }
    }

    async fn disassemble(
        &self,
        d: &DisassembleConfig,
        context: Context,
        body: Body,
        out: &mut dyn Emit,
    ) -> Result<(), ReceiveError> {
        let component = d.component();
        let mut splitter = disassemble::build(d).map_err(|message| PipelineError {
            stage: "disassemble",
            component: component.to_string(),
            message,
        })?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(RECORDS_IN_FLIGHT);
        let input = tokio_util::io::SyncIoBridge::new(body);
        let splitting = tokio::task::spawn_blocking(move || {
            let mut input = std::io::BufReader::with_capacity(64 * 1024, input);
            splitter.split(&mut input, &mut ChannelSink(tx))
        });
        let mut failed = None;
        while let Some(item) = rx.recv().await {
            if let Err(e) = self.take(&context, item, component, d.recoverable(), out).await {
                failed = Some(e);
                break;
            }
        }
        // Dropping the receiver stops the splitter at its next record.
        drop(rx);
        let split = splitting.await;
        if let Some(e) = failed {
            return Err(e);
        }
        match split {
            Ok(Ok(())) => Ok(()),
            Ok(Err(SplitError::Read(e))) => Err(match e.get_ref().and_then(|i| i.downcast_ref::<PipelineError>()) {
                // An earlier stage (a decoder) refused the content.
                Some(p) => ReceiveError::Pipeline(p.clone()),
                None => ReceiveError::Emit(EmitError::Store(format!("reading the message: {e}"))),
            }),
            Ok(Err(e @ SplitError::Malformed { .. })) => Err(ReceiveError::Pipeline(PipelineError {
                stage: "disassemble",
                component: component.to_string(),
                message: e.to_string(),
            })),
            Ok(Err(SplitError::Stopped)) => Err(ReceiveError::Emit(EmitError::Store(
                "the record channel closed while splitting".into(),
            ))),
            // A bug of ours, triggered by this content: retrying would hit it
            // again, so the interchange is refused (suspended as received).
            Err(join) => Err(ReceiveError::Pipeline(PipelineError {
                stage: "disassemble",
                component: component.to_string(),
                message: format!("the disassembler failed unexpectedly ({join}); please report it"),
            })),
        }
    }
}

#[async_trait]
impl ReceivePipeline for StagedReceive {
    async fn run(&self, context: Context, body: Body, out: &mut dyn Emit) -> Result<(), ReceiveError> {
        let mut body = body;
        for d in &self.decode {
            body = codec::decoder(d, body);
        }
        match &self.disassemble {
            Some(d) => self.disassemble(d, context, body, out).await,
            None => Ok(out.emit(context, body).await?),
        }
    }

    fn disassembles(&self) -> bool {
        self.disassemble.is_some()
    }
}

/// A send pipeline of stages; with none, pass-through.
pub struct StagedSend {
    assemble: Option<AssembleConfig>,
    encode: Vec<EncodeConfig>,
}

impl SendPipeline for StagedSend {
    fn wrap(&self, _: &Context, body: Body) -> Result<Body, PipelineError> {
        let mut body = body;
        for e in &self.encode {
            body = codec::encoder(e, body);
        }
        Ok(body)
    }

    fn assembler(&self) -> Option<&AssembleConfig> {
        self.assemble.as_ref()
    }
}

impl ReceivePipelineConfig {
    /// Build the pipeline. The config must have passed `validate()`.
    pub fn build(&self) -> Result<Box<dyn ReceivePipeline>, String> {
        self.validate()?;
        let validate = match &self.validate {
            Some(v) => Some((
                sluice_model::Filter::parse(&v.rule).map_err(|e| format!("validate rule `{}`: {e}", v.rule))?,
                v.rule.clone(),
            )),
            None => None,
        };
        Ok(Box::new(StagedReceive {
            decode: self.decode.clone(),
            disassemble: self.disassemble.clone(),
            validate,
        }))
    }
}

impl SendPipelineConfig {
    pub fn build(&self) -> Box<dyn SendPipeline> {
        Box::new(StagedSend {
            assemble: self.assemble.clone(),
            encode: self.encode.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    pub(crate) struct Collect(pub Vec<(Context, Result<Vec<u8>, std::io::Error>)>);

    #[async_trait]
    impl Emit for Collect {
        async fn emit(&mut self, context: Context, mut body: Body) -> Result<(), EmitError> {
            let mut v = Vec::new();
            let r = body.read_to_end(&mut v).await.map(|_| v);
            self.0.push((context, r));
            Ok(())
        }
        async fn record(&mut self, context: Context, body: Vec<u8>) -> Result<(), EmitError> {
            self.0.push((context, Ok(body)));
            Ok(())
        }
        async fn bad_record(&mut self, context: Context, _: Vec<u8>, error: PipelineError) -> Result<(), EmitError> {
            self.0.push((context, Err(std::io::Error::other(error))));
            Ok(())
        }
    }

    #[tokio::test]
    async fn passthrough_emits_one_unchanged_message() {
        let mut ctx = Context::new();
        ctx.promote("file", "name", "a.txt");
        let mut out = Collect(Vec::new());
        ReceivePipelineConfig::default()
            .build()
            .unwrap()
            .run(ctx.clone(), Box::new(&b"hello"[..]), &mut out)
            .await
            .unwrap();
        assert_eq!(out.0.len(), 1);
        assert_eq!(out.0[0].1.as_ref().unwrap(), b"hello");
        let mut sent = Vec::new();
        SendPipelineConfig::default()
            .build()
            .wrap(&ctx, Box::new(&b"bye"[..]))
            .unwrap()
            .read_to_end(&mut sent)
            .await
            .unwrap();
        assert_eq!(sent, b"bye");
    }

    /// Run a pipeline, given as TOML, over `doc`.
    async fn run_toml(pipeline: &str, doc: &str) -> (Collect, Result<(), ReceiveError>) {
        #[derive(serde::Deserialize)]
        struct Location {
            pipeline: ReceivePipelineConfig,
        }
        let location: Location = toml::from_str(pipeline).unwrap();
        let mut out = Collect(Vec::new());
        let body: Body = Box::new(std::io::Cursor::new(doc.as_bytes().to_vec()));
        let res = location
            .pipeline
            .build()
            .unwrap()
            .run(Context::new(), body, &mut out)
            .await;
        (out, res)
    }

    /// Run a pipeline that must fail: how many messages it gave, and its error.
    async fn failure(pipeline: &str, doc: &str) -> (usize, String) {
        let (out, res) = run_toml(pipeline, doc).await;
        (out.0.len(), res.unwrap_err().to_string())
    }

    /// Each message's sequence and promoted `order.id` (as text), and its
    /// body, or the error it was suspended with.
    fn seen(out: &Collect) -> Vec<(Option<String>, Option<String>, String)> {
        out.0
            .iter()
            .map(|(ctx, body)| {
                let sequence = ctx.promoted("interchange", "sequence").map(|v| v.to_string());
                let id = ctx.promoted("order", "id").map(|v| match v {
                    sluice_model::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                let body = match body {
                    Ok(b) => String::from_utf8_lossy(b).into_owned(),
                    Err(e) => format!("bad: {e}"),
                };
                (sequence, id, body)
            })
            .collect()
    }

    const JSON_ORDERS: &str = r#"{"orders": [{"id": 1}, {"id": tru}, {"id": "C"}]}"#;
    const CSV_ORDERS: &str = "id,name\nA,acme\nB\nC,zed\n";

    #[tokio::test]
    async fn a_recoverable_json_interchange_suspends_only_the_bad_record() {
        let (out, res) = run_toml(
            r#"pipeline = { disassemble = { type = "json", array = "/orders", recoverable = true, promote = { "order.id" = "/id" } } }"#,
            JSON_ORDERS,
        )
        .await;
        res.unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            seen(&out),
            vec![
                (s("1"), s("1"), r#"{"id": 1}"#.into()),
                (
                    s("2"),
                    None,
                    "bad: disassemble stage, component json: record 2 (at byte 23): malformed JSON: expected ident at line 1 column 11"
                        .into()
                ),
                (s("3"), s("C"), r#"{"id": "C"}"#.into()),
            ]
        );
    }

    #[tokio::test]
    async fn an_unrecoverable_json_interchange_fails_at_the_bad_record() {
        let json = r#"pipeline = { disassemble = { type = "json", array = "/orders" } }"#;
        assert_eq!(
            failure(json, JSON_ORDERS).await,
            (
                1,
                "disassemble stage, component json: record 2 (at byte 23): malformed JSON: expected ident at line 1 column 11"
                    .into()
            )
        );
        assert_eq!(
            failure(json, "[1]").await,
            (
                0,
                "disassemble stage, component json: the top-level value is an array; `orders` is not an index in it (at byte 0)"
                    .into()
            )
        );
    }

    #[tokio::test]
    async fn a_recoverable_csv_interchange_suspends_only_the_bad_record() {
        let pipeline = r#"pipeline = { disassemble = { type = "csv", recoverable = true, promote = { "order.id" = "id" } }, validate = { rule = "order.id != 'C'" } }"#;
        let (out, res) = run_toml(pipeline, CSV_ORDERS).await;
        res.unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            seen(&out),
            vec![
                (s("1"), s("A"), "id,name\nA,acme\n".into()),
                (
                    s("2"),
                    None,
                    "bad: disassemble stage, component csv: record 2 (at byte 15): the record has 1 fields, the header 2".into()
                ),
                (
                    s("3"),
                    s("C"),
                    "bad: validate stage, component rule: record 3 (at byte 17): does not satisfy `order.id != 'C'`".into()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn an_unrecoverable_csv_interchange_fails_at_the_bad_record() {
        assert_eq!(
            failure(
                r#"pipeline = { disassemble = { type = "csv", batch = 1 } }"#,
                CSV_ORDERS
            )
            .await,
            (
                1,
                "disassemble stage, component csv: record 2 (at byte 15): the record has 1 fields, the header 2".into()
            )
        );
        let (out, res) = run_toml(
            r#"pipeline = { disassemble = { type = "lines", batch = 2 } }"#,
            "a\nb\nc",
        )
        .await;
        res.unwrap();
        assert_eq!(
            seen(&out).into_iter().map(|(_, _, b)| b).collect::<Vec<_>>(),
            vec!["a\nb\n", "c\n"]
        );
    }

    #[test]
    fn check_refuses_bad_disassembler_options() {
        #[derive(serde::Deserialize)]
        struct Location {
            pipeline: ReceivePipelineConfig,
        }
        let e = |pipeline: &str| {
            toml::from_str::<Location>(pipeline)
                .unwrap()
                .pipeline
                .validate()
                .unwrap_err()
        };
        assert_eq!(
            e(r#"pipeline = { disassemble = { type = "csv", batch = 0 } }"#),
            "disassemble (csv): batch 0 is not 1 to 1000000 (records per message)"
        );
        assert!(
            e(r#"pipeline = { disassemble = { type = "json", array = "x" } }"#)
                .starts_with("disassemble (json): array")
        );
        assert!(
            e(r#"pipeline = { disassemble = { type = "lines", batch = 0 } }"#)
                .starts_with("disassemble (lines): batch 0")
        );
    }
}
