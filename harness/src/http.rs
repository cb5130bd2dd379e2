//! A minimal HTTP/1.1 client for `http` steps (plain requests to the
//! server's web root), so the harness needs no HTTP client crate.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A parsed HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (names lower-case), in order.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request (with `Connection: close`) and reads the response.
pub async fn request(
    host: &str,
    port: u16,
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<Response, String> {
    let fut = async {
        let mut tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("TCP connect to {host}:{port} failed: {e}"))?;
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("writing the request failed: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(resp) = parse(&buf, method == "HEAD", false)? {
                return Ok(resp);
            }
            let n = tcp
                .read(&mut chunk)
                .await
                .map_err(|e| format!("reading the response failed: {e}"))?;
            if n == 0 {
                return parse(&buf, method == "HEAD", true)?
                    .ok_or_else(|| "connection closed before a complete response".to_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("HTTP request timed out after {} ms", timeout.as_millis()))?
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a response if `buf` holds a complete one (`eof`: no more data).
fn parse(buf: &[u8], head: bool, eof: bool) -> Result<Option<Response>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head_text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &buf[end + 4..];
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let done = |body: Vec<u8>| {
        Ok(Some(Response {
            status,
            headers: headers.clone(),
            body,
        }))
    };
    if head || status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
        return done(Vec::new());
    }
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return match dechunk(rest)? {
            Some(body) => done(body),
            None if eof => Err("connection closed inside a chunked body".to_owned()),
            None => Ok(None),
        };
    }
    if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() >= len {
            return done(rest[..len].to_vec());
        }
        return if eof {
            Err(format!("body shorter than Content-Length {len}"))
        } else {
            Ok(None)
        };
    }
    if eof {
        done(rest.to_vec())
    } else {
        Ok(None)
    }
}

fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello",
            false,
            false,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
        assert_eq!(r.header("SERVER"), Some("x"));
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
            false,
            false
        )
        .expect("ok")
        .is_none());
        let r = parse(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            false,
            false,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(r.body, b"abcde");
        let r = parse(b"HTTP/1.0 200 OK\r\n\r\nuntil eof", false, true)
            .expect("ok")
            .expect("complete");
        assert_eq!(r.body, b"until eof");
    }
}
