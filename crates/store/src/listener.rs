//! PostgreSQL change fan-out: a `LISTEN` connection that wakes this replica's watchers when any
//! replica committed notifications or alerts (`pg_notify` in the write transaction). Watchers
//! re-read by cursor, so a missed or repeated wake-up loses nothing.

use std::time::Duration;

use tokio::sync::watch;

use crate::write_thread::CHANGES_CHANNEL;
use crate::ChangeCursor;

/// Listens until `closed` turns true (the store closed) or nobody watches `changes` any more.
pub(crate) fn spawn(
    url: String,
    mut closed: watch::Receiver<bool>,
    changes: watch::Sender<ChangeCursor>,
) {
    tokio::spawn(async move {
        loop {
            let connected = tokio::select! {
                c = sqlx::postgres::PgListener::connect(&url) => c,
                _ = closed.wait_for(|c| *c) => return,
            };
            match connected {
                Ok(mut listener) => {
                    if listener.listen(CHANGES_CHANNEL).await.is_ok() {
                        // (Re)connected: anything may have happened meanwhile; watchers re-read.
                        changes.send_modify(|c| {
                            c.notification += 1;
                            c.alert += 1;
                        });
                        loop {
                            tokio::select! {
                                received = listener.recv() => {
                                    if let Err(e) = received {
                                        tracing::warn!(error = %e, "change listener lost its PostgreSQL connection; reconnecting");
                                        break;
                                    }
                                    changes.send_modify(|c| {
                                        c.notification += 1;
                                        c.alert += 1;
                                    });
                                }
                                _ = closed.wait_for(|c| *c) => return,
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change listener cannot connect; retrying")
                }
            }
            if changes.is_closed() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    });
}
