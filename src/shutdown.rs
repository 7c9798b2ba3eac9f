//! The signal every part of the server drains on: SIGTERM (what container runtimes send) or
//! Ctrl-C.

/// Calls `reopen` at each SIGHUP, for as long as the server runs (the audit log's logrotate).
pub async fn on_hangup(reopen: impl Fn()) {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            while hangups.recv().await.is_some() {
                reopen();
            }
        }
        Err(e) => log::error!("cannot listen for SIGHUP: {e}"),
    }
    #[cfg(not(unix))]
    let _ = reopen;
}

/// Resolves on the first SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            log::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                log::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => log::info!("Ctrl-C received"),
        _ = term => log::info!("SIGTERM received"),
    }
}
