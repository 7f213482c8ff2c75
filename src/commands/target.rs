//! Which running sidecar a command talks to: `--url`, `--token` and
//! `--config` mean the same on every command that uses the admin API.
//! With `--config`, the URL and the token default from that file's
//! `server.listen` and `server.auth_token`; flags win over the file.

use std::path::PathBuf;

use super::{base_url, CommandError};
use crate::runtime::Sidecar;

/// Where no flag and no config say otherwise (the embedded default's listen).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8088";

/// The flags, as given.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TargetArgs {
    /// Base URL of the running sidecar [default: from --config's
    /// server.listen, else http://127.0.0.1:8088]
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token for the admin API [default: from --config's
    /// server.auth_token]
    #[arg(long, env = "EVENT_PUSHER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The sidecar's config file: URL and token default from it, and `dlq`
    /// may read its spool directly when no sidecar answers
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// The flags resolved against the config file.
pub struct Target {
    pub url: String,
    pub token: Option<String>,
    /// The loaded config, when `--config` was given.
    pub sidecar: Option<Sidecar>,
}

impl TargetArgs {
    pub fn resolve(self) -> Result<Target, CommandError> {
        let sidecar = self.config.as_deref().map(Sidecar::from_file).transpose()?;
        let from_config = sidecar.as_ref().map(|s| s.config());
        let url = self
            .url
            .or_else(|| from_config.map(|c| base_url(c.server.listen)))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let token = self
            .token
            .filter(|t| !t.is_empty())
            .or_else(|| from_config.and_then(|c| c.server.token()).map(str::to_owned));
        Ok(Target {
            url: url.trim_end_matches('/').to_owned(),
            token,
            sidecar,
        })
    }
}
