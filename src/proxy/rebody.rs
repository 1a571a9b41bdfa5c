//! Forwarding a request body that sluice has already read (and may have rewritten).
//!
//! Why this file exists: pingora 0.9.1 treats a body read in `request_filter` as consumed and
//! forwards only its retry buffer, capped at 64 KiB, so larger bodies hang until the read
//! timeout (pingora issues #349 and #575; the fix, PR #816 `Session::set_buffered_body`, is
//! not released). Delete this file once pingora ships it.
//!
//! How: after the body has been read, the downstream HTTP/1 session is finished as if for
//! keep-alive, which hands back the raw connection plus any bytes the client pipelined after
//! the body. The connection is sluice's [`Guarded`] wrapper; its replay queue is loaded with a
//! synthesized request (the same request line and headers, an exact `Content-Length` for the
//! new body, no `Transfer-Encoding` or `Expect`), the body, and the pipelined bytes. A fresh
//! pingora session over the same connection then parses it as a normal request and streams the
//! body upstream itself. The wrapper already wraps every connection, so nothing nests across
//! keep-alive requests, and the connection's keep-alive settings are carried over.
//! (pingora's own `set_pipelined_prefix` cannot be used: it refuses more than 1 MiB.)
//!
//! Most bodies do not need that second parse: pingora forwards its retry buffer (the body as
//! read, kept when it fits in 64 KiB) and passes it through `request_body_filter` first. So
//! for a body that fits, [`prepare`] turns that buffer on before the read, [`hand_back`] keeps
//! the final body in the request's context, [`filter`] swaps it in for the buffer on each
//! attempt at the upstream, and [`head`] gives the upstream request the body's framing. Only
//! larger (or empty) bodies take the re-parse.

use bytes::{BufMut, Bytes, BytesMut};
use pingora_core::apps::HttpPersistentSettings;
use pingora_core::protocols::http::ServerSession;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;

use super::guard::Guarded;
use crate::inbound::Framing;

/// pingora's retry buffer capacity (`BODY_BUF_LIMIT`). Were it smaller, a body between the two
/// would find the buffer truncated and take [`replace`]: slower, never wrong.
const RETRY_BUFFER: u64 = 64 * 1024;

/// Before the body is read: have pingora keep a copy of it when it can fit its retry buffer.
pub fn prepare(session: &mut Session, framing: Framing) {
    let fits = match framing {
        Framing::Length(n) => n <= RETRY_BUFFER,
        Framing::Chunked => true,
        Framing::None => false,
    };
    if fits {
        session.downstream_session.enable_retry_buffering();
    }
}

/// After the body is read (and maybe rewritten): have pingora forward `body`. When pingora
/// kept the body as read in its retry buffer, `body` goes into `slot` for [`filter`] to swap
/// in; otherwise the session is replaced ([`replace`]).
pub async fn hand_back(session: &mut Session, slot: &mut Option<Bytes>, body: Bytes) -> Result<()> {
    if session.downstream_session.get_retry_buffer().is_some() {
        *slot = Some(body);
        return Ok(());
    }
    replace(session, body).await
}

/// The upstream request's framing for a body forwarded through [`filter`]: its exact length,
/// no `Transfer-Encoding`, no `Expect` (the body is already here; a 100 Continue from the
/// upstream must not reach the client a second time).
pub fn head(req: &mut RequestHeader, body: &Bytes) -> Result<()> {
    req.remove_header(&http::header::TRANSFER_ENCODING);
    req.remove_header(&http::header::EXPECT);
    req.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    Ok(())
}

/// `request_body_filter` for a body held in `slot`: pingora's retry buffer (the body as read)
/// is replaced by it, once per upstream attempt (`sent` is reset when an attempt's request
/// head is built). Any other body data would be bytes after the body: refused.
pub fn filter(data: &mut Option<Bytes>, slot: &Option<Bytes>, sent: &mut bool) -> Result<()> {
    let Some(body) = slot else {
        return Ok(());
    };
    if data.is_none() {
        return Ok(());
    }
    if std::mem::replace(sent, true) {
        return Error::e_explain(
            ErrorType::InternalError,
            "request body data after the body was forwarded",
        );
    }
    *data = Some(body.clone());
    Ok(())
}

/// Replace the downstream request's body with `body`. The old body must have been read in
/// full. Only HTTP/1 sessions are supported (the data plane does not offer HTTP/2).
pub async fn replace(session: &mut Session, body: Bytes) -> Result<()> {
    let mut head = BytesMut::with_capacity(1024);
    encode_head(session.req_header(), body.len(), &mut head);
    let head = head.freeze();

    // If anything below fails, the session left in place is a parsed copy of the request head
    // over an in-memory stream, so later phases (logging) still see a valid request.
    let mut placeholder = ServerSession::new_http1(Box::new(std::io::Cursor::new(head.to_vec())));
    placeholder.read_request().await?;

    // Pipelining is on for every data-plane request (`request::filter`), so `settings` carries
    // it to the fresh session: bytes the client pipelined after this body are replayed after
    // it and become the next request on the connection.
    let settings = HttpPersistentSettings::for_session(&session.downstream_session);
    // `reuse()` below must hand the connection back (with any pipelined bytes) instead of
    // closing it; the real keep-alive choice is restored from `settings`.
    session.downstream_session.set_pipelining_enabled(true);
    // A client's `Connection: close` would make pingora refuse the keep-alive and close the
    // connection in `reuse()`: drop it from this (discarded) head only. The synthesized head
    // keeps it, so the fresh session still closes after its response.
    session
        .downstream_session
        .req_header_mut()
        .remove_header(&http::header::CONNECTION);
    session.downstream_session.set_keepalive(Some(60));
    let old = std::mem::replace(&mut *session.downstream_session, placeholder);
    let ServerSession::H1(h1) = old else {
        *session.downstream_session = old;
        return Error::e_explain(ErrorType::InternalError, "body replacement needs HTTP/1");
    };
    let Some(reusable) = h1.reuse().await? else {
        return Error::e_explain(
            ErrorType::ReadError,
            "downstream closed during body replacement",
        );
    };
    let (stream, pipelined) = reusable.into_parts();
    let Ok(mut guarded) = stream.into_any().downcast::<Guarded>() else {
        return Error::e_explain(ErrorType::InternalError, "downstream stream is not guarded");
    };
    guarded.replay(head);
    guarded.replay(body);
    if let Some(extra) = pipelined {
        guarded.replay(extra.freeze());
    }
    let mut fresh = ServerSession::new_http1(guarded);
    settings.apply_to_session(&mut fresh);
    if !fresh.read_request().await? {
        return Error::e_explain(
            ErrorType::InternalError,
            "synthesized request was not parsed",
        );
    }
    *session.downstream_session = fresh;
    Ok(())
}

/// Write the request line and headers of `req` with `Content-Length: len`, dropping the
/// framing headers of the original body and `Expect` (the body is already here).
fn encode_head(req: &RequestHeader, len: usize, out: &mut BytesMut) {
    out.put_slice(req.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(req.raw_path());
    out.put_slice(if req.version == http::Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    for (name, value) in req.headers.iter() {
        if name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
            || name == http::header::EXPECT
        {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"content-length: ");
    out.put_slice(len.to_string().as_bytes());
    out.put_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_swaps_the_buffer_once_per_attempt() {
        let slot = Some(Bytes::from_static(b"{\"redacted\":true}"));
        let mut sent = false;
        let mut data = Some(Bytes::from_static(b"{\"original\":1}"));
        filter(&mut data, &slot, &mut sent).unwrap();
        assert_eq!(data.as_deref(), Some(&b"{\"redacted\":true}"[..]));
        // The end of the body passes as it is.
        let mut end = None;
        filter(&mut end, &slot, &mut sent).unwrap();
        assert!(end.is_none());
        // More data in the same attempt would be sent after the body: refused.
        let mut more = Some(Bytes::from_static(b"x"));
        assert!(filter(&mut more, &slot, &mut sent).is_err());
        // A new attempt (another upstream after a connect failure) sends it again.
        sent = false;
        let mut retry = Some(Bytes::from_static(b"{\"original\":1}"));
        filter(&mut retry, &slot, &mut sent).unwrap();
        assert_eq!(retry.as_deref(), Some(&b"{\"redacted\":true}"[..]));
    }

    #[test]
    fn filter_leaves_bodies_it_does_not_hold() {
        let mut sent = false;
        let mut data = Some(Bytes::from_static(b"abc"));
        filter(&mut data, &None, &mut sent).unwrap();
        filter(&mut data, &None, &mut sent).unwrap();
        assert_eq!(data.as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn head_frames_the_held_body() {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
        req.insert_header("Transfer-Encoding", "chunked").unwrap();
        req.insert_header("Expect", "100-continue").unwrap();
        req.insert_header("Content-Length", "999").unwrap();
        head(&mut req, &Bytes::from_static(b"12345")).unwrap();
        assert!(req.headers.get("transfer-encoding").is_none());
        assert!(req.headers.get("expect").is_none());
        let lengths: Vec<_> = req.headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, ["5"]);
    }

    #[test]
    fn head_gets_exact_length_and_loses_old_framing() {
        let mut req = RequestHeader::build("POST", b"/v1/chat/completions?a=1", None).unwrap();
        req.insert_header("Host", "localhost").unwrap();
        req.insert_header("Transfer-Encoding", "chunked").unwrap();
        req.insert_header("Expect", "100-continue").unwrap();
        req.insert_header("X-Request-Id", "abc").unwrap();
        let mut out = BytesMut::new();
        encode_head(&req, 42, &mut out);
        let s = String::from_utf8(out.to_vec()).unwrap();
        assert!(
            s.starts_with("POST /v1/chat/completions?a=1 HTTP/1.1\r\n"),
            "{s}"
        );
        assert!(s.contains("host: localhost\r\n"));
        assert!(s.contains("x-request-id: abc\r\n"));
        assert!(s.ends_with("content-length: 42\r\n\r\n"));
        assert!(!s.to_ascii_lowercase().contains("transfer-encoding"));
        assert!(!s.to_ascii_lowercase().contains("expect"));
    }
}
