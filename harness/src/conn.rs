//! The WebSocket driver: one client connection with a reader task that
//! buffers every server event in a queue, so expectations read frames in
//! arrival order with a per-step timeout, and closes are observed reliably.

use crate::transcript::Frame;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue, Uri};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// Something the server did on a connection.
#[derive(Clone, Debug)]
pub enum Incoming {
    /// A data frame.
    Frame(Frame),
    /// The connection ended (close frame, TCP drop, or error); the text is
    /// stable across runs so snapshots can show it.
    Closed(String),
}

/// An event with its arrival time.
#[derive(Clone, Debug)]
pub struct Received {
    /// When the reader task got it.
    pub at: Instant,
    /// What it was.
    pub what: Incoming,
}

/// Host, port and scheme of a `ws://` URL.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Host without IPv6 brackets.
    pub host: String,
    /// Port (80 when the URL has none).
    pub port: u16,
    /// `host:port` as written in the URL (for `Host` headers).
    pub authority: String,
    /// Path and query (`/v1`).
    pub path: String,
}

impl Endpoint {
    /// Parses a `ws://HOST:PORT/PATH` URL. `wss://` is refused: the harness
    /// only talks to servers on this machine and carries no TLS stack.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("ws") => {}
            Some(other) => {
                return Err(format!(
                    "unsupported URL scheme {other:?} in {url:?}: only ws:// is supported"
                ))
            }
            None => return Err(format!("URL {url:?} needs ws://")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("URL {url:?} has no host"))?
            .to_string();
        let host = uri
            .host()
            .ok_or_else(|| format!("URL {url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        Ok(Endpoint {
            host,
            port: uri.port_u16().unwrap_or(80),
            authority,
            path,
        })
    }

    /// The URL with another path.
    pub fn url_with_path(&self, path: &str) -> String {
        format!("ws://{}{}", self.authority, path)
    }
}

/// One client WebSocket connection.
pub struct Connection {
    sink: Option<SplitSink<Ws, Message>>,
    rx: mpsc::UnboundedReceiver<Received>,
    reader: JoinHandle<()>,
    /// Set once a close was read, so later reads see it again at once.
    closed: Option<String>,
}

/// A successful handshake.
pub struct Opened {
    /// The connection.
    pub conn: Connection,
    /// Response headers of the 101 (names lower-case).
    pub headers: Vec<(String, String)>,
}

fn describe_ws_error(e: &WsError) -> String {
    match e {
        WsError::Http(resp) => format!("handshake rejected: HTTP {}", resp.status()),
        other => other.to_string(),
    }
}

impl Connection {
    /// Connects to `url` with extra request headers, within `timeout`.
    pub async fn open(
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Opened, String> {
        let ep = Endpoint::parse(url)?;
        let fut = async {
            let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
                .await
                .map_err(|e| format!("TCP connect to {}:{} failed: {e}", ep.host, ep.port))?;
            let _ = tcp.set_nodelay(true);
            let mut req = url
                .into_client_request()
                .map_err(|e| format!("bad request for {url}: {e}"))?;
            for (name, value) in headers {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("bad header name {name:?}: {e}"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|e| format!("bad header value {value:?}: {e}"))?;
                req.headers_mut().append(name, value);
            }
            tokio_tungstenite::client_async(req, tcp)
                .await
                .map_err(|e| describe_ws_error(&e))
        };
        let (ws, resp) = tokio::time::timeout(timeout, fut).await.map_err(|_| {
            format!(
                "WebSocket handshake with {url} timed out after {} ms",
                timeout.as_millis()
            )
        })??;
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_loop(stream, tx));
        Ok(Opened {
            conn: Connection {
                sink: Some(sink),
                rx,
                reader,
                closed: None,
            },
            headers,
        })
    }

    /// Sends one frame.
    pub async fn send(&mut self, msg: Message, timeout: Duration) -> Result<(), String> {
        let sink = self.sink.as_mut().ok_or("connection is closed")?;
        match tokio::time::timeout(timeout, sink.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("send failed: {}", describe_ws_error(&e))),
            Err(_) => Err(format!("send timed out after {} ms", timeout.as_millis())),
        }
    }

    /// The next event, waiting at most `timeout` (`None` on timeout). Once
    /// a close has been read it is returned again at once: the second
    /// element says whether this is its first reading.
    pub async fn next(&mut self, timeout: Duration) -> Option<(Received, bool)> {
        if let Some(detail) = &self.closed {
            if let Ok(r) = self.rx.try_recv() {
                return Some((r, true));
            }
            return Some((
                Received {
                    at: Instant::now(),
                    what: Incoming::Closed(detail.clone()),
                },
                false,
            ));
        }
        let r = match tokio::time::timeout(timeout, self.rx.recv()).await {
            Err(_) => return None,
            Ok(Some(r)) => r,
            Ok(None) => Received {
                at: Instant::now(),
                what: Incoming::Closed("connection ended".to_owned()),
            },
        };
        if let Incoming::Closed(d) = &r.what {
            self.closed = Some(d.clone());
        }
        Some((r, true))
    }

    /// Events already queued (read by nobody), without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            if let Incoming::Closed(d) = &r.what {
                self.closed = Some(d.clone());
            }
            out.push(r);
        }
        out
    }

    /// True once a close has been read.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Clean close: sends a close frame and waits for the server's close.
    /// Returns the events that arrived meanwhile; `Err` if the closing
    /// handshake did not finish in time.
    pub async fn close(&mut self, timeout: Duration) -> (Vec<Received>, Result<(), String>) {
        let mut seen = self.drain();
        if self.closed.is_some() {
            return (seen, Ok(()));
        }
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if let Err(e) = self.send(Message::Close(Some(frame)), timeout).await {
            // Already gone: nothing more to close.
            seen.extend(self.drain());
            if self.closed.is_some() {
                return (seen, Ok(()));
            }
            return (seen, Err(e));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(r)) => {
                    let done = matches!(r.what, Incoming::Closed(_));
                    if let Incoming::Closed(d) = &r.what {
                        self.closed = Some(d.clone());
                    }
                    seen.push(r);
                    if done {
                        return (seen, Ok(()));
                    }
                }
                Ok(None) => {
                    self.closed = Some("connection ended".to_owned());
                    return (seen, Ok(()));
                }
                Err(_) => {
                    return (
                        seen,
                        Err(format!(
                        "the server did not complete the WebSocket closing handshake within {} ms",
                        timeout.as_millis()
                    )),
                    )
                }
            }
        }
    }

    /// Abrupt close: the TCP connection is dropped without a close frame.
    pub async fn drop_tcp(mut self) {
        self.reader.abort();
        let reader = std::mem::replace(&mut self.reader, tokio::spawn(async {}));
        let _ = reader.await;
        self.sink.take();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn read_loop(mut stream: SplitStream<Ws>, tx: mpsc::UnboundedSender<Received>) {
    let push = |what: Incoming| {
        let _ = tx.send(Received {
            at: Instant::now(),
            what,
        });
    };
    let mut closed = false;
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) if !closed => {
                push(Incoming::Frame(Frame::Text(t.as_str().to_owned())))
            }
            Some(Ok(Message::Binary(b))) if !closed => {
                push(Incoming::Frame(Frame::Binary(b.to_vec())))
            }
            Some(Ok(Message::Close(frame))) if !closed => {
                closed = true;
                let detail = match frame {
                    Some(f) if f.reason.is_empty() => format!("close frame {}", u16::from(f.code)),
                    Some(f) => format!("close frame {} {:?}", u16::from(f.code), f.reason.as_str()),
                    None => "close frame without code".to_owned(),
                };
                push(Incoming::Closed(detail));
                // Keep reading so tungstenite can finish the closing handshake.
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                if !closed {
                    let detail = match &e {
                        WsError::Protocol(tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)
                        | WsError::ConnectionClosed
                        | WsError::AlreadyClosed => "no close frame".to_owned(),
                        WsError::Io(io)
                            if matches!(
                                io.kind(),
                                std::io::ErrorKind::ConnectionReset
                                    | std::io::ErrorKind::ConnectionAborted
                                    | std::io::ErrorKind::BrokenPipe
                                    | std::io::ErrorKind::UnexpectedEof
                            ) =>
                        {
                            "no close frame".to_owned()
                        }
                        other => format!("error: {other}"),
                    };
                    push(Incoming::Closed(detail));
                }
                return;
            }
            None => {
                if !closed {
                    push(Incoming::Closed("no close frame".to_owned()));
                }
                return;
            }
        }
    }
}
