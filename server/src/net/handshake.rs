//! The HTTP side of a connection: read the request head, answer `GET /`,
//! 404s and plain requests ourselves, and upgrade `/v1` to a WebSocket with
//! our `Server` header and the client's reflected address.

use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// The handshake `Server` header: contains "Magic Wormhole Mailbox" and our
/// version, as clients and the Python tests expect.
pub fn server_header() -> String {
    format!(
        "Magic Wormhole Mailbox {} (wormhole-mailbox-rs)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Largest request head we read.
const MAX_HEAD: usize = 16 * 1024;

/// The welcome's `your-address` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YourAddress {
    pub ip: IpAddr,
    pub port: u16,
}

impl YourAddress {
    /// `{"port": N, "ipv4": "a.b.c.d"}` or `{"port": N, "ipv6": "..."}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("port".into(), self.port.into());
        let key = if self.ip.is_ipv4() { "ipv4" } else { "ipv6" };
        m.insert(key.into(), self.ip.to_string().into());
        serde_json::Value::Object(m)
    }
}

/// The address to reflect: `X-Real-IP`/`X-Real-Port` from a front-end proxy
/// when present (falling back to the TCP port when the port header is
/// missing or bad, where the Python server fails with HTTP 500), otherwise
/// the TCP peer; IPv4-mapped IPv6 is reported as IPv4.
pub fn reflected_address(
    peer: SocketAddr,
    real_ip: Option<&str>,
    real_port: Option<&str>,
) -> YourAddress {
    let unmap = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if let Some(ip) = real_ip.and_then(|s| s.trim().parse::<IpAddr>().ok()) {
        let port = real_port
            .and_then(|p| p.trim().parse::<u16>().ok())
            .unwrap_or(peer.port());
        return YourAddress { ip, port };
    }
    YourAddress {
        ip: unmap(peer.ip()),
        port: peer.port(),
    }
}

/// What the handshake produced.
pub enum Outcome {
    /// An accepted WebSocket upgrade on `/v1`, its `101` not sent yet.
    Upgrade(Box<Upgrade>),
    /// A plain HTTP request was answered and the connection closed.
    Answered,
}

/// A WebSocket upgrade whose `101 Switching Protocols` is held back, so it
/// can leave in one `send` with the connection's first frame (the welcome)
/// instead of two.
pub struct Upgrade {
    stream: TcpStream,
    /// The `101` response head.
    response: String,
    /// Bytes the client sent after its request head (early frames).
    rest: Vec<u8>,
    /// The address to reflect in the welcome.
    pub address: YourAddress,
}

impl Upgrade {
    /// Writes the `101` and, when given, `first` as a text frame in the
    /// same write, then hands the connection to the WebSocket layer.
    pub async fn finish(
        self,
        first: Option<String>,
        config: WebSocketConfig,
    ) -> std::io::Result<WebSocketStream<TcpStream>> {
        let Upgrade {
            mut stream,
            response,
            rest,
            ..
        } = self;
        let mut out = response.into_bytes();
        if let Some(text) = first {
            Frame::message(text, OpCode::Data(Data::Text), true)
                .format(&mut out)
                .map_err(std::io::Error::other)?;
        }
        stream.write_all(&out).await?;
        Ok(WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config)).await)
    }
}

async fn respond(stream: &mut TcpStream, status: &str, extra: &str, body: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\nServer: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        server_header(),
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Reads one request head and either upgrades or answers it.
pub async fn accept(mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<Outcome> {
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Outcome::Answered);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => break len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                respond(
                    &mut stream,
                    "431 Request Header Fields Too Large",
                    "",
                    "request head too large\n",
                )
                .await;
                return Ok(Outcome::Answered);
            }
            Err(_) => {
                respond(&mut stream, "400 Bad Request", "", "bad request\n").await;
                return Ok(Outcome::Answered);
            }
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(&buf[..head_len]).is_err() {
        respond(&mut stream, "400 Bad Request", "", "bad request\n").await;
        return Ok(Outcome::Answered);
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let path = req.path.unwrap_or("/");
    let route = path.split(['?', '#']).next().unwrap_or("/");
    if req.method != Some("GET") {
        respond(
            &mut stream,
            "405 Method Not Allowed",
            "Allow: GET\r\n",
            "method not allowed\n",
        )
        .await;
        return Ok(Outcome::Answered);
    }
    if route == "/" {
        respond(&mut stream, "200 OK", "", "Wormhole Relay\n").await;
        return Ok(Outcome::Answered);
    }
    if route != "/v1" && !route.starts_with("/v1/") {
        respond(&mut stream, "404 Not Found", "", "No Such Resource\n").await;
        return Ok(Outcome::Answered);
    }
    let is_upgrade = header("upgrade").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
    });
    let key = header("sec-websocket-key");
    let (true, Some(key)) = (is_upgrade, key) else {
        respond(
            &mut stream,
            "200 OK",
            "",
            "This is the Magic Wormhole mailbox WebSocket endpoint; connect with a WebSocket client.\n",
        )
        .await;
        return Ok(Outcome::Answered);
    };
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        respond(
            &mut stream,
            "426 Upgrade Required",
            "Sec-WebSocket-Version: 13\r\n",
            "unsupported WebSocket version\n",
        )
        .await;
        return Ok(Outcome::Answered);
    }
    let address = reflected_address(peer, header("x-real-ip"), header("x-real-port"));
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nServer: {}\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        server_header(),
        derive_accept_key(key.trim().as_bytes())
    );
    Ok(Outcome::Upgrade(Box::new(Upgrade {
        stream,
        response: resp,
        rest: buf[head_len..].to_vec(),
        address,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_rules() {
        let peer: SocketAddr = "[::ffff:10.1.2.3]:5000".parse().expect("addr");
        assert_eq!(
            reflected_address(peer, None, None).to_json(),
            serde_json::json!({"port": 5000, "ipv4": "10.1.2.3"})
        );
        assert_eq!(
            reflected_address(peer, Some("127.1.2.3"), Some("54321")).to_json(),
            serde_json::json!({"port": 54321, "ipv4": "127.1.2.3"})
        );
        assert_eq!(
            reflected_address(peer, Some("::1"), Some("54321")).to_json(),
            serde_json::json!({"port": 54321, "ipv6": "::1"})
        );
        // no port header: fall back to the TCP port instead of failing
        assert_eq!(
            reflected_address(peer, Some("::1"), None).to_json(),
            serde_json::json!({"port": 5000, "ipv6": "::1"})
        );
        // garbage address header: use the peer
        assert_eq!(
            reflected_address(peer, Some("not-an-ip"), Some("1")).to_json(),
            serde_json::json!({"port": 5000, "ipv4": "10.1.2.3"})
        );
    }
}
