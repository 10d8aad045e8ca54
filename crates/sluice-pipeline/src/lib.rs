//! Pipelines: what happens to a message body between an adapter and the box.
//!
//! A receive pipeline takes one inbound body and context and emits one or
//! more messages (decode → disassemble → validate → promote); a send pipeline
//! wraps an outbound body (assemble → encode). Only the pass-through pipeline
//! exists so far; the stages and built-in components come with the
//! bounded-memory work.
//!
//! Architecture Invariant: bodies are streams. A pipeline component reads
//! and writes [`Body`] streams; memory per message is bounded by a chunk, not
//! by the message. A component that needs the whole document must say so and
//! carry a size cap and a concurrency limit.

use async_trait::async_trait;
use serde::Deserialize;
use sluice_model::Context;
use tokio::io::AsyncRead;

/// A message body on its way through: a byte stream.
pub type Body = Box<dyn AsyncRead + Send + Unpin>;

#[derive(Debug, thiserror::Error)]
#[error("pipeline `{pipeline}`, stage {stage}, component {component}: {message}")]
pub struct PipelineError {
    pub pipeline: String,
    pub stage: String,
    pub component: String,
    pub message: String,
}

/// Receives what a receive pipeline produces.
#[async_trait]
pub trait Emit: Send {
    async fn emit(&mut self, context: Context, body: Body) -> Result<(), EmitError>;
}

/// Why an emitted message could not be taken (content store full, ...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmitError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Emit(#[from] EmitError),
}

#[async_trait]
pub trait ReceivePipeline: Send + Sync {
    fn name(&self) -> &str;
    /// Turn one inbound body into messages, handing each to `out`.
    async fn run(&self, context: Context, body: Body, out: &mut dyn Emit) -> Result<(), ReceiveError>;
}

pub trait SendPipeline: Send + Sync {
    fn name(&self) -> &str;
    /// Wrap the outbound body in this pipeline's stages.
    fn wrap(&self, context: &Context, body: Body) -> Result<Body, PipelineError>;
}

/// Which pipeline a receive location or send port uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PipelineConfig {
    /// The body goes through untouched.
    #[default]
    Passthrough,
}

impl PipelineConfig {
    pub fn receive(&self) -> Box<dyn ReceivePipeline> {
        match self {
            PipelineConfig::Passthrough => Box::new(PassThrough),
        }
    }

    pub fn send(&self) -> Box<dyn SendPipeline> {
        match self {
            PipelineConfig::Passthrough => Box::new(PassThrough),
        }
    }
}

/// The pass-through pipeline: one message out per body in, bytes unchanged.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

#[async_trait]
impl ReceivePipeline for PassThrough {
    fn name(&self) -> &str {
        "passthrough"
    }
    async fn run(&self, context: Context, body: Body, out: &mut dyn Emit) -> Result<(), ReceiveError> {
        out.emit(context, body).await?;
        Ok(())
    }
}

impl SendPipeline for PassThrough {
    fn name(&self) -> &str {
        "passthrough"
    }
    fn wrap(&self, _: &Context, body: Body) -> Result<Body, PipelineError> {
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    struct Collect(Vec<(Context, Vec<u8>)>);

    #[async_trait]
    impl Emit for Collect {
        async fn emit(&mut self, context: Context, mut body: Body) -> Result<(), EmitError> {
            let mut v = Vec::new();
            body.read_to_end(&mut v).await.map_err(|e| EmitError(e.to_string()))?;
            self.0.push((context, v));
            Ok(())
        }
    }

    #[tokio::test]
    async fn passthrough_emits_one_unchanged_message() {
        let mut ctx = Context::new();
        ctx.promote("file", "name", "a.txt");
        let mut out = Collect(Vec::new());
        let p = PipelineConfig::default().receive();
        p.run(ctx.clone(), Box::new(&b"hello"[..]), &mut out).await.unwrap();
        assert_eq!(out.0, vec![(ctx.clone(), b"hello".to_vec())]);
        let mut sent = Vec::new();
        PipelineConfig::default()
            .send()
            .wrap(&ctx, Box::new(&b"bye"[..]))
            .unwrap()
            .read_to_end(&mut sent)
            .await
            .unwrap();
        assert_eq!(sent, b"bye");
    }
}
