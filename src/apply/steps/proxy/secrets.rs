//! The proxy's TLS certificates and keys: secrets of the spec, delivered like a pod's
//! secret files, as files for root under `/run/secrets` of its container (mode 0400), in a
//! memory-backed volume on the proxy's engine held by its keeper; written again when a
//! certificate is renewed or an engine restart emptied the volume.

use std::collections::BTreeMap;

use bollard::models::ContainerCreateBody;

use super::super::super::{ApplyError, Run};
use super::proxy_name;
use crate::engine::docker::VolumeFile;
use crate::plan::Change;

impl Run<'_> {
    /// The secrets the proxy's TLS listeners name, decrypted, as files for root (nginx's
    /// master reads them), mode 0400.
    pub(in crate::apply) fn proxy_secret_files(
        &self,
        c: &Change,
    ) -> Result<Vec<(String, crate::secrets::Plaintext)>, ApplyError> {
        let names = self.proxy_spec(c)?.tls_secrets();
        self.decrypt_named(c, &names)
    }

    /// The proxy's TLS certificates and keys (secrets of the spec) as files under
    /// `/run/secrets` of its container, like every secret: a fresh memory-backed volume on
    /// its engine, mounted read-only. Its versions are recorded in the proxy's config (a
    /// renewal reloads them in place), not on the volume.
    pub(in crate::apply) async fn deliver_proxy_secrets(
        &self,
        c: &Change,
        region: &str,
        body: &mut ContainerCreateBody,
    ) -> Result<(), ApplyError> {
        let values = self.proxy_secret_files(c)?;
        if values.is_empty() {
            return Ok(());
        }
        let files = as_files(&values);
        let volume = self
            .secrets_volume(
                c,
                region,
                &proxy_name(self.project),
                &files,
                (0, 0),
                &BTreeMap::new(),
            )
            .await?;
        body.host_config
            .get_or_insert_with(Default::default)
            .mounts
            .get_or_insert_with(Vec::new)
            .push(crate::engine::docker::secrets_mount(
                &volume,
                crate::proxy::SECRETS_DIR,
                true,
            ));
        Ok(())
    }

    /// The mount of a proxy container's certificates and keys, if it has one.
    pub(in crate::apply) async fn proxy_secret_mounts(
        &self,
        region: &str,
        id: &str,
    ) -> Result<Vec<bollard::models::Mount>, ApplyError> {
        Ok(self
            .secrets_volume_of(region, id)
            .await?
            .map(|v| crate::engine::docker::secrets_mount(&v, crate::proxy::SECRETS_DIR, true))
            .into_iter()
            .collect())
    }

    /// The proxy's certificates and keys written again into the volume its container
    /// mounts (a new certificate, or an engine restart emptied it): nginx reads them at
    /// its next reload.
    pub(in crate::apply) async fn refill_proxy_secrets(
        &self,
        c: &Change,
        region: &str,
        id: &str,
    ) -> Result<(), ApplyError> {
        let values = self.proxy_secret_files(c)?;
        if values.is_empty() {
            return Ok(());
        }
        // Made without TLS: a new listener's `listen` change replaces it.
        self.refill_volume(c, region, id, &as_files(&values), (0, 0))
            .await
    }
}

/// Decrypted secrets as files for root, mode 0400.
fn as_files(values: &[(String, crate::secrets::Plaintext)]) -> Vec<VolumeFile<'_>> {
    values
        .iter()
        .map(|(name, value)| VolumeFile {
            name,
            bytes: value.expose(),
            mode: 0o400,
        })
        .collect()
}
