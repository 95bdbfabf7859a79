//! Accepting TCP connections and serving HTTP/1 on each: what `axum::serve` does, plus a
//! deadline for every request head. `axum::serve` gives hyper no timer, so hyper's header
//! timeout never runs there, and a client that opens connections and sends its request line or
//! headers slowly, or never (slowloris), keeps each socket and its buffers for as long as it
//! likes. Here a connection whose next request head has not fully arrived `header_timeout`
//! after the server started waiting for it is closed; that also ends a keep-alive connection
//! left idle for as long.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::connect_info::IntoMakeServiceWithConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service as _;

/// Serves `listener` until `shutdown` completes; then stops accepting, lets each connection
/// finish the request it is answering (and closes it after), and returns once all are closed.
/// Upgraded connections (WebSocket) are no longer HTTP's and are not waited for here.
pub async fn serve(
    listener: TcpListener,
    mut app: IntoMakeServiceWithConnectInfo<Router, SocketAddr>,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    // Each connection holds a receiver of `open`; `closed()` resolves once all are dropped.
    let (open, connection_open) = watch::channel(());
    let (drain, draining) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    back_off_after(err).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // SSE tokens must leave as soon as they are written, not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let service = match app.call(peer).await {
            Ok(service) => TowerToHyperService::new(service),
            Err(never) => match never {},
        };
        let (mut draining, still_open) = (draining.clone(), connection_open.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = http
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = async { drop(draining.wait_for(|drain| *drain).await) } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(still_open);
        });
    }
    drop(listener);
    drain.send_replace(true);
    drop(connection_open);
    open.closed().await;
}

/// A failed accept: a connection reset before it was accepted is the client's and is skipped;
/// anything else (out of file descriptors, say) waits a second, so that the loop does not spin
/// while the process cannot accept.
async fn back_off_after(err: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        err.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!("cannot accept a connection: {err}; trying again in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
