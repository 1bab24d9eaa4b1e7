//! The attribute keys (and drift fields) that more than one stage reads: written by
//! [`super::desired`] and by the observers (from the engine's labels and the host), read by
//! the planner, apply and the operations. A key named once, where it is written, stays a
//! literal.

/// A pod's or the proxy's image reference, as given in the spec.
pub const IMAGE: &str = "image";
/// The image berth builds for a pod with `build:` (tagged with its context's digest).
pub const BUILD_IMAGE: &str = "build.image";
/// A drift field: the container is not running (or not healthy) as it should be.
pub const STATE: &str = "state";
/// The effective update strategy of a pod (see [`super::strategy`]).
pub const UPDATE_STRATEGY: &str = "update.strategy";
/// A pod's health probe: a command, or `:port/path` over HTTP.
pub const HEALTH_CMD: &str = "health.cmd";
pub const HEALTH_HTTP: &str = "health.http";
pub const HEALTH_MIN_UPTIME: &str = "health.min_uptime";
/// The host ports the proxy listens on.
pub const LISTEN: &str = "listen";
/// The proxy's TLS listeners (`PORT cert SECRET key SECRET`, sorted): their certificates are
/// mounted when its container is made.
pub const TLS: &str = "tls";
/// The proxy's rendered nginx config (`crate::proxy::render`); a multi-line text the plan
/// shows as a diff.
pub const CONFIG: &str = "config";
/// Whether a backup runs before each apply (observed from the state of the last one).
pub const BEFORE_APPLY: &str = "before_apply";
/// A backup's store; a drift field when the store is missing or open to others.
pub const STORE: &str = "store";
/// A secret's file, its recipients and its mode (also drift fields of the secret file).
pub const FILE: &str = "file";
pub const RECIPIENTS: &str = "recipients";
pub const MODE: &str = "mode";
/// A network's driver; whether a volume is external.
pub const DRIVER: &str = "driver";
pub const EXTERNAL: &str = "external";
/// How a pod gets a secret: `secret.NAME`, and `secret.NAME.version` for its ciphertext.
pub const SECRET_PREFIX: &str = "secret.";
/// A pod's post-deploy checks: `check[:PORT/PATH]`.
pub const CHECK_PREFIX: &str = "check[";

/// `secret.NAME`: how a pod gets secret `name`.
pub fn secret(name: &str) -> String {
    format!("{SECRET_PREFIX}{name}")
}

/// `secret.NAME.version`: the ciphertext of secret `name` a pod was given.
pub fn secret_version(name: &str) -> String {
    format!("{SECRET_PREFIX}{name}.version")
}

/// Which attribute holds the image a pod runs: [`BUILD_IMAGE`] for a pod berth builds,
/// else [`IMAGE`].
pub fn image_field(attrs: &crate::graph::Attrs) -> &'static str {
    if attrs.contains_key(BUILD_IMAGE) {
        BUILD_IMAGE
    } else {
        IMAGE
    }
}

/// The image a pod runs, as its resource names it: the built tag, or the spec's reference.
pub fn image_ref(attrs: &crate::graph::Attrs) -> Option<&str> {
    attrs.get(image_field(attrs))
}
