//! Hot swap: watches `plugins.dir` and reloads a configured plugin file once it has been
//! quiet for a moment (a file still being copied is not picked up half-written; if it is,
//! it fails to compile and the previous version stays). A slow periodic rescan catches
//! anything the file-system events missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::Plugins;

/// Quiet time after the last event for a file before it is loaded.
const SETTLE: Duration = Duration::from_millis(150);
/// How often every file is looked at regardless of events.
const RESCAN: Duration = Duration::from_secs(10);

/// Runs until `stop` turns true.
pub async fn watch(plugins: Arc<Plugins>, mut stop: watch::Receiver<bool>) {
    if let Err(e) = std::fs::create_dir_all(&plugins.dir) {
        tracing::warn!(dir = %plugins.dir.display(), error = %e, "cannot create the plugins folder");
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for path in event.paths {
                if let Some(name) = path.file_name() {
                    let _ = tx.send(name.to_string_lossy().into_owned());
                }
            }
        }
    })
    .and_then(|mut w| {
        w.watch(&plugins.dir, RecursiveMode::NonRecursive)
            .map(|()| w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(
                dir = %plugins.dir.display(), error = %e,
                "cannot watch the plugins folder; changes are picked up every {}s", RESCAN.as_secs()
            );
            None
        }
    };

    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut rescan = tokio::time::interval_at(Instant::now() + RESCAN, RESCAN);
    loop {
        let next_due = pending.values().min().copied();
        tokio::select! {
            Some(name) = rx.recv() => {
                if plugins.slot(&name).is_some() {
                    pending.insert(name, Instant::now() + SETTLE);
                }
            }
            _ = async { if let Some(due) = next_due { tokio::time::sleep_until(due).await } else { std::future::pending().await } } => {
                let now = Instant::now();
                let due: Vec<String> = pending.iter().filter(|(_, t)| **t <= now).map(|(n, _)| n.clone()).collect();
                for name in due {
                    pending.remove(&name);
                    let p = plugins.clone();
                    let _ = crate::pace::spawn_background(move || p.reload(&name)).await;
                }
            }
            _ = rescan.tick() => {
                let p = plugins.clone();
                let _ = crate::pace::spawn_background(move || p.rescan()).await;
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}
