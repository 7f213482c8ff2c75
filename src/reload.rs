//! Filter reload without a restart (`SIGHUP`, `POST /v1/filters/reload`):
//! read the config file again, compile its `[[filters]]` and scripts, and
//! swap the new chain into the pipeline — all of them, or none.
//!
//! Only filters change. The new chain is assembled around the *running*
//! backends (same slots, priorities and classes), so nothing already queued
//! or claimed can move; backend, server or spool changes in the file need a
//! restart, and the answer says when the file has some. Filters added in
//! Rust (`Sidecar::with_filter`) stay in the chain. Events in flight finish
//! on the chain they started on (the pipeline's `ArcSwap`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_pusher_config::{ConfigError, Spanned};
use event_pusher_core::Pipeline;

use crate::chain_plan::{assemble, ChainBackend, PluginFilter};
use crate::config;

/// The sections of the file a reload does not apply.
const NOT_RELOADED: [&str; 3] = ["backends", "server", "spool"];

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "the sidecar runs on the embedded default config (started without --config FILE): there is no file to \
         reload filters from"
    )]
    NoFile,
    /// The file or a script does not read or compile: `file:line:column: ...`.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

/// What a successful reload put in place.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// Every filter of the new chain (the file's and those added in Rust),
    /// in the order events meet them.
    pub filters: Vec<String>,
    /// The whole chain: name, priority, and `filter` or the backend kind.
    pub chain: Vec<(String, i64, &'static str)>,
    /// Sections (`backends`, `server`, `spool`) that differ in the file
    /// from what runs, and so were not applied.
    pub not_applied: Vec<&'static str>,
}

impl Reloaded {
    /// One sentence for the log and the HTTP answer, when something in the
    /// file was left out.
    pub fn warning(&self) -> Option<String> {
        (!self.not_applied.is_empty()).then(|| {
            let sections: Vec<String> = self.not_applied.iter().map(|s| format!("[{s}]")).collect();
            format!(
                "the file's {} differ from the running config and were not applied: a reload changes only \
                 [[filters]]; restart to apply the rest",
                sections.join(", ")
            )
        })
    }
}

/// Rebuilds the chain's filters from the config file; one per process.
pub struct FilterReloader {
    parts: Arc<Parts>,
    /// Serializes reloads, so two at once cannot interleave their swaps.
    running: tokio::sync::Mutex<()>,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

/// What stays fixed across reloads.
struct Parts {
    path: Option<PathBuf>,
    backends: Vec<ChainBackend>,
    plugins: Vec<PluginFilter>,
    /// The running config's `backends`, `server` and `spool` tables, to tell
    /// the operator when the file no longer matches them.
    running_sections: toml::Table,
}

impl FilterReloader {
    /// `loaded` is the config the process started with.
    pub(crate) fn new(loaded: &config::LoadedConfig, backends: Vec<ChainBackend>, plugins: Vec<PluginFilter>) -> Self {
        let running_sections = match &loaded.path {
            Some(_) => sections(loaded.source.text()).unwrap_or_default(),
            None => toml::Table::new(),
        };
        FilterReloader {
            parts: Arc::new(Parts {
                path: loaded.path.clone(),
                backends,
                plugins,
                running_sections,
            }),
            running: tokio::sync::Mutex::new(()),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Read the file, compile its filters and swap the new chain into
    /// `pipeline`; on any error the running chain stays. Logs the outcome.
    pub async fn reload(&self, pipeline: &Pipeline) -> Result<Reloaded, ReloadError> {
        let _one_at_a_time = self.running.lock().await;
        let parts = self.parts.clone();
        // Reading and compiling scripts is blocking work.
        let built = tokio::task::spawn_blocking(move || parts.build())
            .await
            .unwrap_or_else(|e| {
                Err(ReloadError::Config(ConfigError {
                    file: "<reload>".to_owned(),
                    line: 0,
                    column: 0,
                    key: None,
                    message: format!("the reload task failed: {e}"),
                }))
            });
        match built {
            Ok((chain, not_applied)) => {
                let describe = chain.describe();
                pipeline.swap_chain(chain);
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                let reloaded = Reloaded {
                    filters: describe
                        .iter()
                        .filter(|(_, _, what)| *what == "filter")
                        .map(|(name, _, _)| name.clone())
                        .collect(),
                    chain: describe,
                    not_applied,
                };
                tracing::info!(filters = ?reloaded.filters, "filters reloaded");
                if let Some(w) = reloaded.warning() {
                    tracing::warn!("{w}");
                }
                Ok(reloaded)
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "filter reload failed; the running filters stay");
                Err(e)
            }
        }
    }

    /// `event_pusher_filter_reloads_total{result="ok|error"}`.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP event_pusher_filter_reloads_total Filter reloads (SIGHUP or POST /v1/filters/reload) by result."
        );
        let _ = writeln!(out, "# TYPE event_pusher_filter_reloads_total counter");
        for (result, n) in [("ok", &self.succeeded), ("error", &self.failed)] {
            let _ = writeln!(
                out,
                "event_pusher_filter_reloads_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}

impl Parts {
    /// The new chain, and the sections of the file that were not applied.
    fn build(&self) -> Result<(event_pusher_core::Chain, Vec<&'static str>), ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
        // The whole file is checked, as a restart would check it: a reload
        // must not accept a file the next start refuses.
        let loaded = config::parse(&path.display().to_string(), &text)?;
        let filters = event_pusher_filters::build(&loaded.config.filters, &loaded.source)?;
        let new_sections = sections(&text).unwrap_or_default();
        let not_applied = NOT_RELOADED
            .into_iter()
            .filter(|s| self.running_sections.get(*s) != new_sections.get(*s))
            .collect();
        let chain = assemble(&filters, &self.positioned_backends(path, &text), &self.plugins);
        Ok((chain, not_applied))
    }

    /// The running backends, placed where the file now has their tables, so
    /// that at equal priority they keep file order with the new filters. A
    /// backend the file no longer has keeps running, after the file's
    /// handlers of its priority.
    fn positioned_backends(&self, path: &Path, text: &str) -> Vec<ChainBackend> {
        let positions = table_positions(path, text);
        self.backends
            .iter()
            .map(|b| {
                let mut b = b.clone();
                if b.position != usize::MAX {
                    b.position = positions.get(&b.id()).copied().unwrap_or(usize::MAX - 1);
                }
                b
            })
            .collect()
    }
}

/// `KIND.NAME` → byte offset of `[backends.KIND.NAME]` in the interpolated
/// text: the coordinates the filters' positions use.
fn table_positions(path: &Path, text: &str) -> BTreeMap<String, usize> {
    #[derive(serde::Deserialize)]
    struct Tables {
        #[serde(default)]
        backends: BTreeMap<String, BTreeMap<String, Spanned<toml::Value>>>,
    }
    let Ok(interpolated) = event_pusher_config::interpolate(text, |n| std::env::var(n).ok()) else {
        // `config::parse` has just accepted this text, so this is unreachable
        // in practice; file order then falls back to priority order alone.
        tracing::debug!(file = %path.display(), "cannot interpolate for backend positions");
        return BTreeMap::new();
    };
    let tables: Tables = match toml::from_str(&interpolated.text) {
        Ok(t) => t,
        Err(_) => return BTreeMap::new(),
    };
    tables
        .backends
        .into_iter()
        .flat_map(|(kind, instances)| {
            instances.into_iter().map(move |(name, table)| {
                (
                    event_pusher_core::BackendId::new(&kind, &name).to_string(),
                    table.span().start,
                )
            })
        })
        .collect()
}

/// The `backends`, `server` and `spool` tables of config text, after
/// `${VAR}` interpolation.
fn sections(text: &str) -> Option<toml::Table> {
    let interpolated = event_pusher_config::interpolate(text, |n| std::env::var(n).ok()).ok()?;
    let mut all: toml::Table = toml::from_str(&interpolated.text).ok()?;
    all.retain(|k, _| NOT_RELOADED.contains(&k));
    Some(all)
}

/// Reload on every `SIGHUP` until the task is aborted. The handler is
/// installed before this returns, so a `SIGHUP` from then on reloads instead
/// of ending the process (its default action).
#[cfg(unix)]
pub fn on_sighup<F, Fut>(reload: F) -> std::io::Result<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading filters");
            reload().await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_has_no_file_to_reload() {
        let loaded = config::load(None).expect("embedded default");
        let reloader = FilterReloader::new(&loaded, Vec::new(), Vec::new());
        let err = reloader.parts.build().err();
        assert!(matches!(err, Some(ReloadError::NoFile)), "{err:?}");
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("--config"));
    }

    fn names(chain: &event_pusher_core::Chain) -> Vec<String> {
        chain.describe().into_iter().map(|(name, _, _)| name).collect()
    }

    /// Equal priorities keep file order after a reload too, with the
    /// backends' positions read from the edited file.
    #[test]
    fn a_reloaded_chain_keeps_file_order_among_equal_priorities() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sidecar.toml");
        let backend = "[backends.log.console]\npriority = 50\n\n";
        let after = "[[filters]]\nname = \"after\"\npriority = 50\n\n";
        std::fs::write(&file, format!("{backend}{after}")).unwrap();
        let sidecar = crate::Sidecar::from_config(config::load(Some(&file)).unwrap());
        let assembly = sidecar.build().unwrap();
        assert_eq!(names(&assembly.chain), ["console", "after"]);

        // A new filter before the backend's table moves the table's offset.
        let before = "[[filters]]\nname = \"before\"\npriority = 50\n\n";
        std::fs::write(&file, format!("{before}{backend}{after}")).unwrap();
        let (chain, not_applied) = assembly.reloader.parts.build().unwrap();
        assert_eq!(names(&chain), ["before", "console", "after"]);
        assert!(not_applied.is_empty(), "{not_applied:?}");
    }
}
