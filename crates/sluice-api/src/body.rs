//! Message bodies: a part streamed out (with `Range`), and a new body
//! streamed in (a resubmission's). Memory does not grow with the part: the
//! operations library hands out bounded pieces, and the response goes at
//! the pace the client reads it.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use sluice_adapters::support::body::{Capped, CompleteBody, Fault, FaultSlot, MinRate, Paced};
use sluice_ops::access::Permission;
use sluice_ops::body::{self, BodyOf};
use sluice_ops::{ErrorCode, parse};

use crate::auth::Caller;
use crate::{ApiState, Problem};

#[utoipa::path(get, path = "/api/v1/messages/{id}/parts/{n}", tag = "messages", security(("token" = [])),
    params(("id" = String, Path, description = "A message id (ULID)", pattern = "^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$"), ("n" = u32, Path, description = "Part number (0: the body)", maximum = 999999),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. bytes=0-1023")),
    responses((status = 200, description = "The part, streamed", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "The range asked for", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 416, description = "The range is outside the part", body = crate::openapi::ErrorBody), crate::openapi::Errors))]
/// `GET /api/v1/messages/{id}/parts/{n}`.
pub(crate) async fn message_part(
    caller: Caller,
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    caller.require(Permission::ReadBodies)?;
    let Path((id, n)) = path?;
    let of = BodyOf::Message(parse::parse_message_id(&id)?);
    serve(state, of, &n, &headers).await
}

#[utoipa::path(get, path = "/api/v1/suspended/{id}/parts/{n}", tag = "suspended", security(("token" = [])),
    params(("id" = i64, Path, description = "A suspended entry id", minimum = 1), ("n" = u32, Path, description = "Part number (0: the body)", maximum = 999999),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. bytes=0-1023")),
    responses((status = 200, description = "The part, streamed", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "The range asked for", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 416, description = "The range is outside the part", body = crate::openapi::ErrorBody), crate::openapi::Errors))]
/// `GET /api/v1/suspended/{id}/parts/{n}`.
pub(crate) async fn suspended_part(
    caller: Caller,
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    caller.require(Permission::ReadBodies)?;
    let Path((id, n)) = path?;
    serve(state, BodyOf::Suspended(crate::routes::id_param(&id)?), &n, &headers).await
}

/// A part number: digits only (no sign, no path, no exponent).
fn part_number(text: &str) -> Result<usize, Problem> {
    if text.is_empty() || text.len() > 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::invalid(format!(
            "`{}` is not a part number (0 for the body, 1 for the next part...)",
            text.escape_default()
        )));
    }
    text.parse().map_err(|_| Problem::invalid("part number out of range"))
}

/// The one byte range asked for, as `start..end` (end exclusive), if any
/// and satisfiable; `Err` (416) if it is outside the part. Several ranges,
/// or a header that does not parse, are ignored (the whole part is sent,
/// as RFC 9110 allows).
fn range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => Err(()),
            Some(n) if size > 0 => Ok(Some((size.saturating_sub(n), size))),
            Some(_) => Err(()),
            None => Ok(None),
        },
        (a, "") => match num(a) {
            Some(a) if a < size => Ok(Some((a, size))),
            Some(_) => Err(()),
            None => Ok(None),
        },
        (a, b) => match (num(a), num(b)) {
            (Some(a), Some(b)) if a <= b && a < size => Ok(Some((a, b.min(size - 1) + 1))),
            (Some(a), Some(b)) if a <= b => Err(()),
            _ => Ok(None),
        },
    }
}

async fn serve(state: ApiState, of: BodyOf, n: &str, headers: &HeaderMap) -> Result<Response, Problem> {
    let index = part_number(n)?;
    let part = body::open(state.b.clone(), of, Some(index)).await?;
    let size = part.size;
    let (start, end) = match range(headers, size) {
        Ok(Some(r)) => r,
        Ok(None) => (0, size),
        Err(()) => {
            let mut r = Problem::new(
                ErrorCode::InvalidArgument,
                format!("the range asked for is outside the part ({size} bytes)"),
            )
            .into_response();
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}"))
                    .map_err(|e| Problem::new(ErrorCode::Internal, e.to_string()))?,
            );
            return Ok(r);
        }
    };
    let partial = (start, end) != (0, size);
    let (message, name) = (part.message_id, part.name.clone());
    // Pieces before `start` are read and dropped (the content store reads
    // forward); the stream ends at `end`. A failure half-way (the message
    // deleted meanwhile, corrupt content) cuts the answer short: the client
    // sees fewer bytes than `Content-Length` said.
    // A whole part's last piece is held back until the part's size and
    // CRC-32 are checked (the read after it): content that fails the check
    // ends the answer short of its `Content-Length`, never as a clean 200.
    let reading = Reading {
        part,
        at: 0,
        start,
        end,
        held: None,
        whole: !partial,
        ended: false,
    };
    let stream = futures::stream::try_unfold(reading, |mut r| async move {
        loop {
            if r.ended || (r.at >= r.end && !r.whole) {
                return Ok(None);
            }
            match r.part.next().await {
                Ok(Some(piece)) => {
                    let begin = r.at;
                    r.at += piece.len() as u64;
                    let (from, to) = (r.start.max(begin), r.end.min(r.at));
                    if from < to {
                        let slice = piece.slice((from - begin) as usize..(to - begin) as usize);
                        if !r.whole {
                            return Ok(Some((slice, r)));
                        }
                        if let Some(before) = r.held.replace(slice) {
                            return Ok(Some((before, r)));
                        }
                    }
                }
                Ok(None) => {
                    r.ended = true;
                    return Ok(r.held.take().map(|last| (last, r)));
                }
                Err(e) => {
                    tracing::warn!(message_id = %r.part.message_id, part = r.part.index, error = %e,
                        "a body being sent failed; the answer is cut short");
                    return Err(std::io::Error::other(e.to_string()));
                }
            }
        }
    });
    let body = Body::from_stream(stream);
    let mut response = Response::new(body);
    *response.status_mut() = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let text = |s: String| HeaderValue::from_str(&s).map_err(|e| Problem::new(ErrorCode::Internal, e.to_string()));
    h.insert(header::CONTENT_LENGTH, text((end - start).to_string())?);
    if partial {
        h.insert(
            header::CONTENT_RANGE,
            text(format!("bytes {start}-{}/{size}", end - 1))?,
        );
    }
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    h.insert(
        header::CONTENT_DISPOSITION,
        text(format!("attachment; filename=\"{message}-{index}-{safe}\""))?,
    );
    Ok(response)
}

/// A part being sent: where it is, and the range to send.
struct Reading {
    part: body::Body,
    at: u64,
    start: u64,
    end: u64,
    /// The piece read last, sent once the next read says the part is whole.
    held: Option<bytes::Bytes>,
    /// The whole part is sent (no range): checked at its end.
    whole: bool,
    ended: bool,
}

/// The first fault of a request's body (too slow, cut short, too large),
/// put on each request by [`guarded`].
#[derive(Clone, Default)]
pub(crate) struct BodyFault(pub FaultSlot);

impl BodyFault {
    /// What the client did wrong, if anything: its body was too large
    /// (`too_large`), or cut short, too slow or undecodable
    /// (`invalid_argument`), not a failure of the node.
    pub(crate) fn error(&self) -> Option<sluice_ops::OpsError> {
        let fault = self.0.lock().ok()?.clone()?;
        Some(match fault {
            Fault::TooLarge(m) => sluice_ops::OpsError::TooLarge(m),
            Fault::TooSlow(m) | Fault::Broken(m) | Fault::Undecodable(m) => sluice_ops::OpsError::InvalidArgument(m),
        })
    }

    pub(crate) fn problem(&self) -> Option<Problem> {
        self.error().map(Problem::from)
    }
}

/// Every request's body as the API reads it: complete or an error (an
/// HTTP/2 reset, a body shorter or longer than its `Content-Length`), and
/// cut off when the client sends nothing for `idle` or less than 5 KiB in
/// 10 s of waiting, so no client holds a request (and its connection) open
/// by trickling its body.
pub(crate) fn guarded(req: axum::extract::Request, idle: std::time::Duration) -> axum::extract::Request {
    let h2 = req.version() == axum::http::Version::HTTP_2;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let fault = FaultSlot::default();
    let (mut parts, body) = req.into_parts();
    let complete = CompleteBody::new(body, h2, declared, fault.clone());
    let rate = MinRate {
        bytes: 5 * 1024,
        interval: std::time::Duration::from_secs(10),
    };
    let paced = Paced::new(tokio_util::io::StreamReader::new(complete), idle, rate, fault.clone());
    parts.extensions.insert(BodyFault(fault));
    axum::extract::Request::from_parts(parts, Body::from_stream(tokio_util::io::ReaderStream::new(paced)))
}

/// A resubmission's new body as a reader, at most `max` bytes, failing
/// once the API stops (a client trickling a large upload does not hold
/// the node's stop).
pub(crate) fn reader(
    body: Body,
    fault: &BodyFault,
    max: u64,
    stopping: tokio_util::sync::CancellationToken,
) -> impl tokio::io::AsyncRead + Send + Unpin + 'static {
    Stoppable {
        inner: Capped {
            inner: tokio_util::io::StreamReader::new(body.into_data_stream().map_err(std::io::Error::other)),
            seen: 0,
            max,
            decoded: false,
            fault: fault.0.clone(),
            charge: None,
        },
        stop: Box::pin(stopping.cancelled_owned()),
    }
}

/// A reader that fails once its token is cancelled.
struct Stoppable<R> {
    inner: R,
    stop: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Stoppable<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::future::Future;
        if self.stop.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Err(std::io::Error::other("the node is stopping")));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(range(&with("bytes=0-4"), 10), Ok(Some((0, 5))));
        assert_eq!(range(&with("bytes=5-"), 10), Ok(Some((5, 10))));
        assert_eq!(range(&with("bytes=-3"), 10), Ok(Some((7, 10))));
        assert_eq!(range(&with("bytes=-30"), 10), Ok(Some((0, 10))));
        assert_eq!(range(&with("bytes=8-100"), 10), Ok(Some((8, 10))));
        assert_eq!(range(&with("bytes=10-"), 10), Err(()));
        assert_eq!(range(&with("bytes=12-15"), 10), Err(()));
        assert_eq!(range(&with("bytes=-0"), 10), Err(()));
        // Ignored: several ranges, other units, nonsense, reversed.
        for ignored in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=a-b",
            "bytes=5-2",
            "bytes=--1",
            "bytes=+1-2",
        ] {
            assert_eq!(range(&with(ignored), 10), Ok(None), "{ignored}");
        }
    }

    #[test]
    fn part_numbers_are_digits_only() {
        assert_eq!(part_number("0").unwrap(), 0);
        assert_eq!(part_number("12").unwrap(), 12);
        for bad in ["", "-1", "+1", "1e3", "..", "../0", "0x1", " 1", "9999999"] {
            assert!(part_number(bad).is_err(), "{bad}");
        }
    }
}
