//! Pipelines: what happens to a message body between an adapter and the box.
//!
//! A receive pipeline takes one inbound body and context and emits one or
//! more messages (decode → disassemble → validate → promote); a send pipeline
//! wraps an outbound body (assemble → encode). Built so far: the decode stage
//! (gzip, zstd, with a cap on the decompressed size) and the encode stage
//! (gzip, zstd, with a level). Disassemblers, validation, promotion and
//! batching assemblers are still to come.
//!
//! Architecture Invariant: bodies are streams. A pipeline component reads
//! and writes [`Body`] streams; memory per message is bounded by a chunk, not
//! by the message. A component that needs the whole document must say so and
//! carry a size cap and a concurrency limit.

mod codec;
mod config;

use async_trait::async_trait;
use sluice_model::Context;
use tokio::io::AsyncRead;

pub use crate::config::{
    ByteSize, DecodeConfig, EncodeConfig, GzipDecodeConfig, GzipEncodeConfig, ReceivePipelineConfig,
    SendPipelineConfig, ZstdDecodeConfig, ZstdEncodeConfig,
};

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

/// Receives what a receive pipeline produces.
#[async_trait]
pub trait Emit: Send {
    async fn emit(&mut self, context: Context, body: Body) -> Result<(), EmitError>;
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
}

pub trait SendPipeline: Send + Sync {
    /// Wrap the outbound body in this pipeline's stages.
    fn wrap(&self, context: &Context, body: Body) -> Result<Body, PipelineError>;
}

/// A receive pipeline of stages. With no stages it is pass-through: one
/// message out per body in, bytes unchanged.
pub struct StagedReceive {
    decode: Vec<DecodeConfig>,
}

#[async_trait]
impl ReceivePipeline for StagedReceive {
    async fn run(&self, context: Context, body: Body, out: &mut dyn Emit) -> Result<(), ReceiveError> {
        let mut body = body;
        for d in &self.decode {
            body = codec::decoder(d, body);
        }
        out.emit(context, body).await?;
        Ok(())
    }
}

/// A send pipeline of stages; with none, pass-through.
pub struct StagedSend {
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
}

impl ReceivePipelineConfig {
    pub fn build(&self) -> Box<dyn ReceivePipeline> {
        Box::new(StagedReceive {
            decode: self.decode.clone(),
        })
    }
}

impl SendPipelineConfig {
    pub fn build(&self) -> Box<dyn SendPipeline> {
        Box::new(StagedSend {
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
    }

    #[tokio::test]
    async fn passthrough_emits_one_unchanged_message() {
        let mut ctx = Context::new();
        ctx.promote("file", "name", "a.txt");
        let mut out = Collect(Vec::new());
        ReceivePipelineConfig::default()
            .build()
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
}
