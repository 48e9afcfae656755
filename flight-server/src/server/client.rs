//! A minimal HTTP/1.1 client for `ferris-sql deploy` and `ferris-sql jobs` (plain `http://`;
//! sends `Authorization: Bearer $FERRIS_AUTH_TOKEN` when set).
//!
//! ```text
//! ferris-sql deploy job.sql --server http://127.0.0.1:8080
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An HTTP response: status code and body.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// Sends `method path` with `body` to the server at `base` (`http://host:port`).
pub fn request(base: &str, method: &str, path: &str, body: Option<(&str, &str)>) -> Result<Response, String> {
    let hostport = base.trim_end_matches('/').strip_prefix("http://").ok_or_else(|| format!("'{base}': only http:// servers are supported"))?;
    let mut stream = TcpStream::connect(hostport).map_err(|e| format!("cannot reach {base}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    if let Ok(token) = std::env::var("FERRIS_AUTH_TOKEN") {
        if !token.is_empty() {
            req.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
    }
    let (ctype, text) = body.unwrap_or(("text/plain", ""));
    req.push_str(&format!("Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{text}", text.len()));
    stream.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("malformed status line")?;
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    Ok(Response { status, body: if chunked { dechunk(rest) } else { rest.to_string() } })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
