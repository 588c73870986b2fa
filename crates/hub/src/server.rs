//! The HTTPS server: binds, accepts (bounded by `server.max_connections`), does the mutual-TLS
//! handshake, takes the store id from the client certificate's common name and serves HTTP/1.1
//! with keep-alive through [`crate::api::route`]. Shutdown stops accepting and ends connections.

use crate::api;
use crate::Hub;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `hub`'s listen address; returns the bound address and the listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(SocketAddr, TcpListener)> {
    let listener = TcpListener::bind(addr).await?;
    Ok((listener.local_addr()?, listener))
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    hub: Arc<Hub>,
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(tokio::sync::Semaphore::new(
        hub.config.server.max_connections,
    ));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let hub = hub.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let tls = tokio::select! {
                _ = shutdown.cancelled() => return,
                tls = handshake => tls,
            };
            let tls = match tls {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::info!(%peer, error = %err, "TLS handshake failed");
                    hub.metrics.tls_failures.inc();
                    return;
                }
                Err(_) => return,
            };
            let store = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(crate::tls::common_name);
            let store: Arc<str> = match store {
                Some(cn) => cn.into(),
                None => {
                    tracing::info!(%peer, "client certificate without a common name: refused");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request| {
                let hub = hub.clone();
                let store = store.clone();
                async move { Ok::<_, std::convert::Infallible>(api::route(request, hub, store).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = connection => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "connection ended");
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.shutdown().await;
}
