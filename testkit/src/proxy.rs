//! A TCP proxy a test puts between a client and a server to simulate an
//! outage: cut every connection it carries at once, or refuse new ones,
//! without touching the server (never stop a machine-wide service).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The proxy: listens on `port` of 127.0.0.1 and forwards to `upstream`.
pub struct TcpProxy {
    pub port: u16,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    refusing: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Forward to `upstream` (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> TcpProxy {
        let upstream = upstream.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let (registry, refuse) = (conns.clone(), refusing.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    // Accepted by the kernel already: closing it at once is
                    // what a client sees of a server that is down.
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream.as_str()).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut conns = registry.lock().unwrap_or_else(|p| p.into_inner());
                conns.retain(|c| !c.is_finished());
                conns.push(task);
            }
        });
        TcpProxy {
            port,
            conns,
            refusing,
            accept,
        }
    }

    /// `host:port` to give the client instead of the server's.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Close every proxied connection, both ends, now; how many were open.
    pub fn cut(&self) -> usize {
        let conns: Vec<_> = self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        let n = conns.iter().filter(|c| !c.is_finished()).count();
        for c in conns {
            c.abort();
        }
        n
    }

    /// Cut every connection and close new ones as they come (an outage).
    pub fn down(&self) -> usize {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut()
    }

    /// Forward new connections again (the outage is over).
    pub fn up(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server behind the proxy: bytes pass; a cut ends the
    /// client's stream; while down, connections close at once.
    #[tokio::test]
    async fn forwards_cuts_and_refuses() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = TcpProxy::start(echo_addr).await;
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        assert_eq!(proxy.cut(), 1);
        assert_eq!(c.read(&mut buf).await.unwrap_or(0), 0, "the cut ends the stream");

        proxy.down();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(c.read(&mut buf).await.unwrap_or(0), 0, "closed while down");

        proxy.up();
        let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
        c.write_all(b"pong").await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
