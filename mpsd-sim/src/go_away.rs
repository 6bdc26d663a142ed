//! A scripted HTTP/2 `GOAWAY` that names which request it excludes: the
//! next `h2` connection is not served, but answered with a `GOAWAY` once
//! its first request has arrived.
//!
//! hyper's server cannot send one: its graceful shutdown announces the
//! highest stream id first and the last one it processed only a round trip
//! later, so every stream the client sent in between is included, and h2's
//! own `abrupt_shutdown` includes every stream whose `HEADERS` h2 has read.
//! So this connection speaks the few frames it needs itself: its
//! `SETTINGS`, then, once the client's first `HEADERS` frame is in, one
//! `GOAWAY` (RFC 9113 §6.8). It reads frame headers only (9 bytes each,
//! §4.1), skips every payload without keeping it, and decodes no header
//! block.

use h2::Reason;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// HTTP/2 only: the next connection that negotiates `h2` is not served;
/// once its first request's `HEADERS` frame has arrived (the request is in
/// flight), the simulator sends a `GOAWAY` with this error code and closes
/// the connection. Nothing on it is processed, and the request is not in
/// the [`log`](crate::SimHandle::log); [`SimHandle::go_aways`](crate::SimHandle::go_aways)
/// records what was sent.
///
/// Queue it with [`SimHandle::script_go_away`](crate::SimHandle::script_go_away).
/// HTTP/1.1 connections are served as usual meanwhile.
///
/// ```
/// use mpsd_sim::GoAway;
///
/// // A drained server: "nothing from stream 1 on was processed".
/// let excluded = GoAway::excluding(h2::Reason::NO_ERROR);
/// // The same frame naming the request as one it may have processed.
/// let included = GoAway::including(h2::Reason::NO_ERROR);
/// # let _ = (excluded, included);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct GoAway {
    reason: Reason,
    excludes: bool,
}

impl GoAway {
    /// A `GOAWAY` whose last stream id is 0: the request in flight (and any
    /// other) was not processed, which the client may rely on (RFC 9113
    /// §8.7).
    pub fn excluding(reason: Reason) -> Self {
        Self {
            reason,
            excludes: true,
        }
    }

    /// A `GOAWAY` whose last stream id is the request's own: it may have
    /// been processed, and the client gets no answer to it.
    pub fn including(reason: Reason) -> Self {
        Self {
            reason,
            excludes: false,
        }
    }
}

/// A `GOAWAY` the simulator sent for a scripted [`GoAway`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GoAwaySent {
    /// The connection it went on (numbered as in [`LogEntry::connection`](crate::LogEntry::connection)).
    pub connection: u64,
    /// The stream of the request that was in flight.
    pub stream: u32,
    /// The last stream id it announced.
    pub last_stream_id: u32,
    /// Its error code.
    pub reason: Reason,
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;

/// A frame with no flags on stream 0 (`SETTINGS` and `GOAWAY` are
/// connection frames).
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap_or(0).to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, 0, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Speaks HTTP/2 on `io` until the client's first `HEADERS` frame, then
/// sends `go_away` and shuts the writing side down. Returns what was sent,
/// and leaves reading to the caller (see [`drain`]).
pub(crate) async fn send<S>(
    io: &mut S,
    go_away: GoAway,
    connection: u64,
) -> std::io::Result<GoAwaySent>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The server's preface: an empty SETTINGS frame (defaults).
    io.write_all(&frame(SETTINGS, &[])).await?;
    io.flush().await?;
    let mut preface = [0; PREFACE.len()];
    io.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let stream = loop {
        let mut head = [0; 9];
        io.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        // At most 16 MiB, read through and dropped.
        let skipped =
            tokio::io::copy(&mut (&mut *io).take(len.into()), &mut tokio::io::sink()).await?;
        if skipped < u64::from(len) {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if head[3] == HEADERS {
            break stream;
        }
    };
    let last_stream_id = if go_away.excludes { 0 } else { stream };
    let mut payload = last_stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&u32::from(go_away.reason).to_be_bytes());
    io.write_all(&frame(GOAWAY, &payload)).await?;
    io.shutdown().await?;
    Ok(GoAwaySent {
        connection,
        stream,
        last_stream_id,
        reason: go_away.reason,
    })
}

/// Reads until the client closes: closing a socket with unread bytes
/// would reset the connection, and a reset may reach the client before
/// the `GOAWAY` is read.
pub(crate) async fn drain<S: AsyncRead + Unpin>(io: &mut S) {
    let _ = tokio::io::copy(io, &mut tokio::io::sink()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's preface, SETTINGS and the HEADERS of stream `stream`
    /// (payload bytes are opaque here), then what the simulator wrote.
    async fn exchange(go_away: GoAway, stream: u8) -> (GoAwaySent, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut sent = PREFACE.to_vec();
        sent.extend(frame(SETTINGS, &[0, 3, 0, 0, 0, 100]));
        sent.extend([0, 0, 3, HEADERS, 0x4, 0, 0, 0, stream, 0x82, 0x87, 0x84]);
        client.write_all(&sent).await.unwrap();
        let record = send(&mut server, go_away, 7).await.unwrap();
        drop(server);
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        (record, written)
    }

    #[tokio::test]
    async fn settings_first_then_one_goaway_naming_the_last_stream() {
        let (record, written) = exchange(GoAway::excluding(Reason::NO_ERROR), 3).await;
        assert_eq!(
            (record.connection, record.stream, record.last_stream_id),
            (7, 3, 0)
        );
        let mut expected = frame(SETTINGS, &[]);
        expected.extend(frame(GOAWAY, &[0, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!(written, expected);

        let (record, written) = exchange(GoAway::including(Reason::INTERNAL_ERROR), 5).await;
        assert_eq!((record.stream, record.last_stream_id), (5, 5));
        assert_eq!(&written[9..], &frame(GOAWAY, &[0, 0, 0, 5, 0, 0, 0, 2])[..]);
    }

    #[tokio::test]
    async fn a_client_that_is_not_http2_gets_an_error() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let err = send(&mut server, GoAway::excluding(Reason::NO_ERROR), 0)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
