//! Stopping: the signals that begin a shutdown, and the flag helper every task waits on. The
//! two phases themselves (not ready at once, serve through the grace period, then close the
//! listeners and drain within a bound) are in `lib.rs::run` and `server.rs`.

use tokio::sync::watch;

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

/// Completes when the flag turns true (or its sender is gone). Returns nothing, so no watch
/// guard is ever held across an await.
pub async fn until_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
