//! A small blocking HTTP/1.1 client for a server's `POST /sql` (what `alertflow sql --url`
//! uses; tests use it too). Plain `http://` only: put a TLS-terminating proxy in front of a
//! server reached over an untrusted network.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::record_batch::RecordBatch;

use crate::http::ARROW_STREAM;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://HOST:PORT[/PATH]`.
    #[error("bad URL `{0}`: {1}")]
    Url(String, &'static str),
    /// Nothing answered at the address.
    #[error("cannot reach the server at {addr}: {source}")]
    Unreachable {
        /// `HOST:PORT`.
        addr: String,
        /// What connecting said.
        source: std::io::Error,
    },
    /// The connection failed midway.
    #[error("talking to {0}: {1}")]
    Io(String, std::io::Error),
    /// The answer is not HTTP.
    #[error("the server at {0} sent a malformed answer: {1}")]
    Malformed(String, String),
    /// The server refused the query; its own words.
    #[error("{message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// The SQLSTATE it gave, if any.
        sqlstate: Option<String>,
    },
    /// The Arrow answer cannot be decoded.
    #[error("cannot decode the server's Arrow answer: {0}")]
    Arrow(String),
}

/// `http://host:port/base` → (`host:port`, `/base` without a trailing slash).
fn split_url(url: &str) -> Result<(String, String), ClientError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        if url.starts_with("https://") {
            ClientError::Url(url.into(), "https is not supported: use http:// (behind a TLS proxy if needed)")
        } else {
            ClientError::Url(url.into(), "expected http://HOST:PORT")
        }
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(ClientError::Url(url.into(), "no host"));
    }
    let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.trim_end_matches('/').to_string()))
}

/// One request (`Connection: close`); `path` is appended to the URL's own path.
pub fn request(method: &str, url: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<HttpResponse, ClientError> {
    let (authority, base) = split_url(url)?;
    let unreachable = |source| ClientError::Unreachable { addr: authority.clone(), source };
    let addrs: Vec<_> = authority.to_socket_addrs().map_err(unreachable)?.collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "the host name resolves to no address");
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| unreachable(last))?;
    let io = |e| ClientError::Io(authority.clone(), e);
    let mut head = format!(
        "{method} {base}{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\nUser-Agent: alertflow\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body).map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;
    parse_response(&raw).map_err(|m| ClientError::Malformed(authority.clone(), m))
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad status line `{status_line}`"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let rest = &raw[end + 4..];
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| "bad content-length")?;
        rest.get(..len).ok_or("body shorter than its content-length")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or_default().trim(), 16).map_err(|_| "bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or("truncated chunk")?);
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

/// Runs `sql` on the server at `url` (its Arrow answer, decoded): the schema and the rows.
pub fn query(url: &str, token: Option<&str>, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), ClientError> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Accept", ARROW_STREAM), ("Content-Type", "application/sql")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    let r = request("POST", url, "/sql", &headers, sql.as_bytes())?;
    if r.status != 200 {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(&r.body).ok();
        let field = |k: &str| parsed.as_ref().and_then(|v| v.get(k)).and_then(|v| v.as_str()).map(str::to_string);
        let message = field("error").unwrap_or_else(|| format!("HTTP {}: {}", r.status, r.text().trim()));
        return Err(ClientError::Server { status: r.status, message, sqlstate: field("sqlstate") });
    }
    let reader = StreamReader::try_new(std::io::Cursor::new(r.body), None).map_err(|e| ClientError::Arrow(e.to_string()))?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| ClientError::Arrow(e.to_string()))?;
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(split_url("http://127.0.0.1:8080").unwrap(), ("127.0.0.1:8080".into(), "".into()));
        assert_eq!(split_url("http://host/api/").unwrap(), ("host:80".into(), "/api".into()));
        assert_eq!(split_url("http://[::1]:9/").unwrap(), ("[::1]:9".into(), "".into()));
        assert!(split_url("https://h:1").unwrap_err().to_string().contains("https"));
        assert!(split_url("h:1").is_err());
    }

    #[test]
    fn responses_parse_with_length_or_chunks() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabcdef").unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.header("x-a")), (200, &b"abc"[..], Some("b")));
        let r = parse_response(b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
    }
}
