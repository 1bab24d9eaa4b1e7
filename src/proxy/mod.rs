//! The managed proxy's config: a pure function from the spec (and the container names of
//! the current generation) to the nginx config text, with the constants the engine side uses
//! to run nginx on it (where it lives, the command, the health endpoint) and the helpers that
//! read it back (the health token, the line an nginx error points at).
//!
//! [`render`] holds the renderer; [`headers`] the security-header presets and nginx quoting.

pub mod headers;
pub mod render;

pub use render::{
    CONFIG_DIR, CONFIG_PATH, HEALTH_PATH, SECRET_VERSION_COMMENT, SECRETS_DIR, Servers, command,
    line_of, render, seal, stable_servers, token,
};
