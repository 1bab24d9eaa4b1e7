//! How berth names and shows engine objects, for observation and apply alike: the names
//! apply gives containers for a moment, the stable name of a pod instance's container, and
//! the short form of an id in messages.

use crate::graph::Address;

/// The stable container name of a pod instance: `<project>-<pod>`, `<project>-<pod>-<n>`
/// for replicas (what apply names it, and what the proxy's upstreams name).
pub fn container_name_of(project: &str, address: &Address) -> String {
    match address.replica() {
        Some(i) => format!("{project}-{}-{i}", address.name),
        None => format!("{project}-{}", address.name),
    }
}

/// Whether a container name is one apply gives for a moment: a blue-green candidate, an old
/// container set aside, a deleted one awaiting the commit.
pub fn is_transient(name: &str) -> bool {
    name.ends_with("-berth-next")
        || name.ends_with("-berth-old")
        || name.contains("-berth-deleted-")
}

/// The first 12 characters of an engine id, as `docker ps` shows it.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `sha256:` and 12 hex digits of an image id.
pub fn short_image(id: &str) -> &str {
    id.get(..19).unwrap_or(id)
}
