//! A lean HTTP/1.1 GET: the request bytes and an incremental reader of the response, with no
//! I/O of its own (the probes in [`crate::probe`] feed it what the socket gives).
//!
//! Health checks need the status line; readiness checks also want `Content-Type` and the body.
//! Like Marathon, a check opens a new connection and asks the server to close it after the
//! answer (`Connection: close`), so the server closes first and the checker's side leaves no
//! `TIME_WAIT` socket behind: at tens of thousands of checks a second that is what keeps the
//! ephemeral ports from running out.

/// Most bytes of a response kept; a longer body is cut (and the connection closed early).
pub const MAX_RESPONSE: usize = 64 * 1024;

/// The request, ready to write. Bytes that would break the request line (spaces, CR, LF) are
/// percent-encoded in `path`.
pub fn request(host: &str, port: u16, path: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + path.len() + host.len());
    out.extend_from_slice(b"GET ");
    if !path.starts_with('/') {
        out.push(b'/');
    }
    for b in path.bytes() {
        match b {
            b' ' | b'\r' | b'\n' | b'\t' => {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
            _ => out.push(b),
        }
    }
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    if host.contains(':') && !host.starts_with('[') {
        // An IPv6 literal.
        out.push(b'[');
        out.extend_from_slice(host.as_bytes());
        out.push(b']');
    } else {
        out.extend_from_slice(host.as_bytes());
    }
    out.extend_from_slice(format!(":{port}").as_bytes());
    out.extend_from_slice(
        b"\r\nUser-Agent: stride-health-checker\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    );
    out
}

/// What came back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The reason phrase as sent (may be empty).
    pub reason: String,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Response {
    /// `"<code> <reason>"`, as Marathon shows a bad status in `lastFailureCause`.
    pub fn status_line(&self) -> String {
        let reason = if self.reason.is_empty() {
            canonical_reason(self.status)
        } else {
            &self.reason
        };
        if reason.is_empty() {
            self.status.to_string()
        } else {
            format!("{} {reason}", self.status)
        }
    }
}

/// Where the reader stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Feed more bytes (or [`ResponseReader::finish`] at end of stream).
    More,
    /// The whole response is here.
    Done,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("malformed HTTP status line")]
    StatusLine,
    #[error("connection closed before a response")]
    Empty,
    #[error("response headers larger than {MAX_RESPONSE} bytes")]
    TooLarge,
}

/// How the body's end is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads a response incrementally.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buf: Vec<u8>,
    head: Option<(Response, usize, Framing)>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl ResponseReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes read so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The status, once the status line is in.
    pub fn status(&self) -> Option<u16> {
        if let Some((r, _, _)) = &self.head {
            return Some(r.status);
        }
        let end = find(&self.buf, b"\n")?;
        parse_status_line(&self.buf[..end]).ok().map(|(s, _)| s)
    }

    /// Adds bytes; tells whether the response is complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Progress, ParseError> {
        let room = MAX_RESPONSE.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.parse()
    }

    /// The buffer to read the next bytes into (spare capacity reserved), for callers that read
    /// straight into it; then call [`ResponseReader::parse`].
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        if self.buf.capacity() - self.buf.len() < 256 {
            self.buf.reserve(1024);
        }
        &mut self.buf
    }

    /// Tells whether what [`ResponseReader::buffer`] holds is a complete response.
    pub fn parse(&mut self) -> Result<Progress, ParseError> {
        if self.head.is_none() {
            let Some((end, sep)) = find(&self.buf, b"\r\n\r\n")
                .map(|p| (p, 4))
                .or_else(|| find(&self.buf, b"\n\n").map(|p| (p, 2)))
            else {
                if self.buf.len() >= MAX_RESPONSE {
                    return Err(ParseError::TooLarge);
                }
                return Ok(Progress::More);
            };
            let head = parse_head(&self.buf[..end])?;
            self.head = Some((head.0, end + sep, head.1));
        }
        if self.buf.len() >= MAX_RESPONSE {
            return Ok(Progress::Done);
        }
        let Some((_, start, framing)) = &self.head else {
            return Ok(Progress::More);
        };
        let body = &self.buf[*start..];
        Ok(match framing {
            Framing::Length(n) if body.len() >= *n => Progress::Done,
            Framing::Chunked
                if find(body, b"0\r\n\r\n").is_some_and(|p| chunked_ends_at(body, p)) =>
            {
                Progress::Done
            }
            _ => Progress::More,
        })
    }

    /// The response so far, at end of stream or once [`Progress::Done`].
    pub fn finish(self) -> Result<Response, ParseError> {
        if self.buf.is_empty() {
            return Err(ParseError::Empty);
        }
        let Some((mut response, start, framing)) = self.head else {
            // Headers never ended: take the status line alone if it parses.
            let end = find(&self.buf, b"\n").unwrap_or(self.buf.len());
            let (status, reason) = parse_status_line(&self.buf[..end])?;
            return Ok(Response {
                status,
                reason,
                ..Response::default()
            });
        };
        let body = &self.buf[start.min(self.buf.len())..];
        response.body = match framing {
            Framing::Length(n) => body[..body.len().min(n)].to_vec(),
            Framing::Chunked => dechunk(body),
            Framing::UntilClose => body.to_vec(),
        };
        Ok(response)
    }
}

/// True when the `0\r\n\r\n` found at `p` is the last chunk rather than bytes inside a chunk.
fn chunked_ends_at(body: &[u8], p: usize) -> bool {
    let mut at = 0;
    loop {
        if at == p {
            return true;
        }
        let Some(eol) = find(&body[at..], b"\r\n") else {
            return false;
        };
        let size_text = String::from_utf8_lossy(&body[at..at + eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return false;
        };
        if size == 0 {
            return at == p;
        }
        at += eol + 2 + size + 2;
        if at > p {
            return false;
        }
    }
}

fn dechunk(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(eol) = find(&body[at..], b"\r\n") {
        let size_text = String::from_utf8_lossy(&body[at..at + eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = at + eol + 2;
        let end = (start + size).min(body.len());
        out.extend_from_slice(&body[start..end]);
        at = end + 2;
        if at >= body.len() {
            break;
        }
    }
    out
}

fn parse_status_line(line: &[u8]) -> Result<(u16, String), ParseError> {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches(['\r', '\n']);
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(ParseError::StatusLine);
    }
    let code = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..1000).contains(c))
        .ok_or(ParseError::StatusLine)?;
    Ok((code, parts.next().unwrap_or("").trim().to_string()))
}

fn parse_head(head: &[u8]) -> Result<(Response, Framing), ParseError> {
    let mut lines = head.split(|b| *b == b'\n');
    let (status, reason) = parse_status_line(lines.next().unwrap_or(b""))?;
    let mut response = Response {
        status,
        reason,
        ..Response::default()
    };
    let mut framing = Framing::UntilClose;
    for line in lines {
        let line = String::from_utf8_lossy(line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-type") {
            response.content_type = value.to_string();
        } else if name.eq_ignore_ascii_case("content-length") {
            if let Ok(n) = value.parse() {
                if framing != Framing::Chunked {
                    framing = Framing::Length(n);
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        }
    }
    // 1xx, 204 and 304 answers have no body.
    if status < 200 || status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok((response, framing))
}

fn canonical_reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(chunks: &[&[u8]]) -> (Progress, Response) {
        let mut r = ResponseReader::new();
        let mut p = Progress::More;
        for c in chunks {
            p = r.feed(c).expect("parses");
        }
        (p, r.finish().expect("a response"))
    }

    #[test]
    fn the_request_asks_to_close() {
        let r = String::from_utf8(request("10.0.0.1", 8080, "/health check")).expect("ascii");
        assert_eq!(
            r,
            "GET /health%20check HTTP/1.1\r\nHost: 10.0.0.1:8080\r\nUser-Agent: stride-health-checker\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let r = String::from_utf8(request("::1", 80, "x")).expect("ascii");
        assert!(r.starts_with("GET /x HTTP/1.1\r\nHost: [::1]:80\r\n"));
    }

    #[test]
    fn a_response_with_length_completes_without_waiting_for_close() {
        let (p, r) = read_all(&[
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-",
            b"Length: 5\r\n\r\nhel",
            b"lo",
        ]);
        assert_eq!(p, Progress::Done);
        assert_eq!(r.status, 200);
        assert_eq!(r.content_type, "text/plain");
        assert_eq!(r.body, b"hello");
        assert_eq!(r.status_line(), "200 OK");
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let (p, r) = read_all(&[
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"4\r\nnot \r\n5\r\nready\r\n0\r\n\r\n",
        ]);
        assert_eq!(p, Progress::Done);
        assert_eq!(r.body, b"not ready");
        assert_eq!(r.status_line(), "503 Service Unavailable");
    }

    #[test]
    fn a_body_until_close_and_bare_status_lines() {
        let (p, r) = read_all(&[b"HTTP/1.0 500 Boom\r\n\r\npartial"]);
        assert_eq!(p, Progress::More);
        assert_eq!(r.body, b"partial");
        assert_eq!(r.status_line(), "500 Boom");
        let (_, r) = read_all(&[b"HTTP/1.1 404\r\n"]);
        assert_eq!(r.status_line(), "404 Not Found");
        let (p, r) = read_all(&[b"HTTP/1.1 102 Processing\r\n\r\n"]);
        assert_eq!(p, Progress::Done);
        assert_eq!(r.status, 102);
    }

    #[test]
    fn garbage_is_an_error() {
        let mut r = ResponseReader::new();
        assert_eq!(
            r.feed(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ParseError::StatusLine)
        );
        assert_eq!(ResponseReader::new().finish(), Err(ParseError::Empty));
    }
}
