//! Off-host stores (`stores:`) and the backups' `copies:` of them: what each store is,
//! where it is reached, which secret holds its key, and that every copy names one.

use super::Checker;
use crate::diag::Diagnostic;

impl Checker<'_> {
    pub(super) fn stores(&mut self) {
        let spec = self.spec;
        for s in spec.stores.iter() {
            let url = &s.item.url;
            if let Some(why) = store_url_problem(&url.value) {
                self.push(
                    Diagnostic::error(
                        "store-url",
                        format!("store `{}`: {why}", s.name.value),
                    )
                    .at(url.span, "not an object store berth reaches")
                    .help("write `url: s3://BUCKET/PREFIX` or `url: sftp://USER@HOST/PATH` (a directory on this host is a backup's `store:`)"),
                );
            }
            if let Some(endpoint) = &s.item.endpoint
                && !(endpoint.value.starts_with("https://")
                    || endpoint.value.starts_with("http://"))
            {
                self.push(
                    Diagnostic::error(
                        "store-endpoint",
                        format!(
                            "store `{}`: `{}` is not an http(s) address",
                            s.name.value, endpoint.value
                        ),
                    )
                    .at(endpoint.span, "not a URL")
                    .help("write the object store's address, e.g. `https://s3.example.net`"),
                );
            }
            if url.value.starts_with("sftp://") {
                let s3_only = [
                    &s.item.endpoint,
                    &s.item.region,
                    &s.item.access_key_id,
                    &s.item.secret_access_key,
                ];
                if let Some(given) = s3_only.into_iter().flatten().next() {
                    self.push(
                        Diagnostic::error(
                            "store-settings",
                            format!("store `{}` is reached over sftp, which takes no endpoint, region or keys", s.name.value),
                        )
                        .at(given.span, "an S3 setting")
                        .help("remove it: sftp uses the system's ssh, its keys and known_hosts"),
                    );
                }
            }
            if let Some(key) = &s.item.secret_access_key
                && !spec.secrets.contains(&key.value)
            {
                self.unknown("secret", key, spec.secrets.names(), "secrets");
            }
        }
        for b in spec.backups.iter() {
            let mut seen = std::collections::HashSet::new();
            for copy in &b.item.copies {
                if !spec.stores.contains(&copy.value) {
                    self.unknown("store", copy, spec.stores.names(), "stores");
                } else if !seen.insert(copy.value.as_str()) {
                    self.push(
                        Diagnostic::error(
                            "duplicate-copy",
                            format!(
                                "backup `{}` names store `{}` twice",
                                b.name.value, copy.value
                            ),
                        )
                        .at(copy.span, "named again")
                        .help("name each store once"),
                    );
                }
            }
            let store = &b.item.store;
            if store.value.contains("://") {
                self.push(
                    Diagnostic::error(
                        "backup-store-url",
                        format!("backup `{}`: `store:` is the directory on this host that backups are written to first", b.name.value),
                    )
                    .at(store.span, "a URL, not a directory")
                    .help("give `store:` a directory (e.g. `/var/backups/PROJECT`), declare the object store under `stores:` and list it in the backup's `copies:`"),
                );
            }
        }
    }
}

/// Why a store's `url` is not one berth can use, if it is not.
fn store_url_problem(url: &str) -> Option<String> {
    if url.starts_with("s3://") {
        return crate::spec::parse_s3_url(url)
            .is_none()
            .then(|| format!("`{url}` names no bucket"));
    }
    if url.starts_with("sftp://") {
        return crate::spec::parse_sftp_url(url).is_none().then(|| {
            format!("`{url}` is not `sftp://[USER@]HOST[:PORT]/PATH` (a path below `/`)")
        });
    }
    Some(format!(
        "`{url}` is neither an `s3://` nor an `sftp://` URL"
    ))
}
