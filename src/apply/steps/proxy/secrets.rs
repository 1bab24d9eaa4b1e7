//! The proxy's TLS certificates and keys: secrets of the spec, delivered as files for root
//! under `/run/secrets` of its container (a tmpfs directory, mode 0400), and written again
//! when a certificate is renewed or a reboot emptied the tmpfs.

use bollard::models::ContainerCreateBody;

use super::super::super::{ApplyError, Run};
use crate::plan::Change;
use crate::secrets::delivery;

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
    /// `/run/secrets` of its container, like every secret: a fresh tmpfs directory,
    /// bind-mounted read-only.
    pub(in crate::apply) fn deliver_proxy_secrets(
        &self,
        c: &Change,
        body: &mut ContainerCreateBody,
    ) -> Result<(), ApplyError> {
        let values = self.proxy_secret_files(c)?;
        if values.is_empty() {
            return Ok(());
        }
        let files = as_files(&values);
        let dir =
            delivery::prepare(self.project, &files, 0, 0).map_err(|e| ApplyError::Secret {
                address: c.address.to_string(),
                reason: crate::apply::steps::DeliverError::Files(e),
            })?;
        body.host_config
            .get_or_insert_with(Default::default)
            .mounts
            .get_or_insert_with(Vec::new)
            .push(bollard::models::Mount {
                target: Some(crate::proxy::SECRETS_DIR.to_owned()),
                source: Some(dir.display().to_string()),
                typ: Some(bollard::models::MountType::BIND),
                read_only: Some(true),
                ..Default::default()
            });
        Ok(())
    }

    /// The proxy's certificates and keys written again into the directory its container
    /// mounts (a new certificate, or a reboot emptied the tmpfs): nginx reads them at its
    /// next reload.
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
        let Some((dir, _)) = self
            .engine(region)
            .state(id)
            .await?
            .binds
            .into_iter()
            .find(|(_, dest)| dest == crate::proxy::SECRETS_DIR)
        else {
            return Ok(()); // made without TLS: a new listener's `listen` change replaces it
        };
        let files = as_files(&values);
        delivery::refill(self.project, std::path::Path::new(&dir), &files, 0, 0).map_err(|e| {
            ApplyError::Secret {
                address: c.address.to_string(),
                reason: crate::apply::steps::DeliverError::Files(e),
            }
        })
    }
}

/// Decrypted secrets as files for root, mode 0400.
fn as_files(values: &[(String, crate::secrets::Plaintext)]) -> Vec<delivery::SecretFile<'_>> {
    values
        .iter()
        .map(|(name, value)| delivery::SecretFile {
            name,
            value,
            mode: 0o400,
        })
        .collect()
}
