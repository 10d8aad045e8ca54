//! Guards between the SFTP client library and the server. russh-sftp reads
//! every packet into a buffer of the length the packet declares (up to
//! 4 GiB), and copies a `READ` answer into the caller's buffer without
//! checking it is no longer than asked (a longer one panics). So:
//! [`PacketCap`] refuses a packet declared longer than [`MAX_PACKET`]
//! before the library sees it, and [`WideReads`] reads a file through a
//! buffer larger than any packet, so no answer can overflow it.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest SFTP packet accepted from a server: the client asks for
/// 256 KiB at most (russh-sftp's `max_packet_len`), plus room for headers
/// and a directory batch's long names.
pub const MAX_PACKET: u32 = 256 * 1024 + 16 * 1024;

/// A channel stream whose incoming SFTP packets are at most `MAX_PACKET`
/// long; writes pass through.
pub struct PacketCap<S> {
    inner: S,
    /// The length prefix being read, and how much of it is here.
    header: [u8; 4],
    have: usize,
    /// Bytes of the current packet's body still to pass through.
    left: u64,
    /// What of a read header is still to be handed out.
    out: usize,
    /// Where a packet's body is read before it is handed out.
    chunk: Vec<u8>,
}

impl<S> PacketCap<S> {
    pub fn new(inner: S) -> PacketCap<S> {
        PacketCap {
            inner,
            header: [0; 4],
            have: 0,
            left: 0,
            out: 4,
            chunk: vec![0; 64 * 1024],
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PacketCap<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        loop {
            // Hand out what is left of a header already checked.
            if this.out < 4 {
                let n = (4 - this.out).min(buf.remaining());
                buf.put_slice(&this.header[this.out..this.out + n]);
                this.out += n;
                return Poll::Ready(Ok(()));
            }
            if this.left > 0 {
                let limit = usize::try_from(this.left)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining())
                    .min(this.chunk.len());
                let mut part = ReadBuf::new(&mut this.chunk[..limit]);
                match Pin::new(&mut this.inner).poll_read(cx, &mut part) {
                    Poll::Ready(Ok(())) => {
                        let n = part.filled().len();
                        buf.put_slice(part.filled());
                        this.left -= n as u64;
                        return Poll::Ready(Ok(()));
                    }
                    other => return other,
                }
            }
            // The next packet's length.
            let mut head = ReadBuf::new(&mut this.header[this.have..]);
            match Pin::new(&mut this.inner).poll_read(cx, &mut head) {
                Poll::Ready(Ok(())) => {
                    let n = head.filled().len();
                    if n == 0 {
                        return Poll::Ready(Ok(())); // the end of the stream
                    }
                    this.have += n;
                    if this.have < 4 {
                        continue;
                    }
                    let length = u32::from_be_bytes(this.header);
                    if length > MAX_PACKET {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "the server sent an SFTP packet of {length} bytes (at most {MAX_PACKET} are taken)"
                            ),
                        )));
                    }
                    this.have = 0;
                    this.left = u64::from(length);
                    this.out = 0;
                }
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PacketCap<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A reader (an SFTP file) read through a buffer larger than any packet
/// [`PacketCap`] lets through, so a `READ` answer always fits.
pub struct WideReads<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<R> WideReads<R> {
    pub fn new(inner: R) -> WideReads<R> {
        WideReads {
            inner,
            buf: vec![0; MAX_PACKET as usize * 2],
            start: 0,
            end: 0,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for WideReads<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.start == this.end {
            let mut whole = ReadBuf::new(&mut this.buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut whole) {
                Poll::Ready(Ok(())) => {
                    this.start = 0;
                    this.end = whole.filled().len();
                }
                other => return other,
            }
        }
        let n = (this.end - this.start).min(out.remaining());
        out.put_slice(&this.buf[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn packet(len: usize, fill: u8) -> Vec<u8> {
        let mut p = (len as u32).to_be_bytes().to_vec();
        p.extend(std::iter::repeat_n(fill, len));
        p
    }

    #[tokio::test]
    async fn packets_within_the_cap_pass_whole_and_a_longer_one_is_refused_unread() {
        let mut wire = packet(5, 1);
        wire.extend(packet(100_000, 2));
        let mut got = Vec::new();
        PacketCap::new(std::io::Cursor::new(wire.clone()))
            .read_to_end(&mut got)
            .await
            .unwrap();
        assert_eq!(got, wire);
        // A declared 4 GiB: an error, nothing allocated for it.
        let mut wire = packet(3, 1);
        wire.extend(u32::MAX.to_be_bytes());
        let mut reader = PacketCap::new(std::io::Cursor::new(wire));
        let mut got = Vec::new();
        let e = reader.read_to_end(&mut got).await.unwrap_err();
        assert!(e.to_string().contains("SFTP packet of 4294967295 bytes"), "{e}");
        assert_eq!(got, packet(3, 1));
    }

    #[tokio::test]
    async fn wide_reads_hand_out_everything_in_small_pieces() {
        let data: Vec<u8> = (0..700_000u32).map(|i| i as u8).collect();
        let mut r = WideReads::new(std::io::Cursor::new(data.clone()));
        let mut got = Vec::new();
        let mut small = [0u8; 1000];
        loop {
            let n = r.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
    }
}
