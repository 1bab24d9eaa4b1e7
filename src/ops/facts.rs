//! The facts a plan relies on (hashes, ids, modes, digests; never a secret value), and
//! the saved plan that carries them: `berth plan --out FILE` writes it, `berth apply FILE`
//! refuses it when a fact moved on.

use super::{OpError, Session};
use crate::encode::sha256_hex;
use crate::engine::names::short_image;
use crate::plan::saved::{SAVED_PLAN_FORMAT, SavedPlan};

impl Session {
    /// This session's plan, saved with the facts it was made from (`berth plan --out`).
    pub fn saved_plan(&self) -> Result<SavedPlan, OpError> {
        Ok(SavedPlan {
            format_version: SAVED_PLAN_FORMAT,
            project: self.project.spec.project.value.clone(),
            spec: self.project.spec_path.display().to_string(),
            facts: self.facts()?,
            plan: self.plan.clone(),
            profiles: self.profiles.clone(),
        })
    }

    /// What moved on since `saved` was made (one line each); empty when it still holds.
    pub fn stale_facts(&self, saved: &SavedPlan) -> Result<Vec<String>, OpError> {
        Ok(saved.stale_facts(&self.facts()?, &self.project.spec.project.value, &self.plan))
    }

    /// Every observed fact the plan relies on, by name, each as a short text: the spec's
    /// hash; each container's id, configuration hash, state and image; each secret file's
    /// fingerprint, mode and recorded recipients; the identity's mode and key; each build
    /// context's digest; the id each image reference resolves to. Never a secret value.
    pub fn facts(&self) -> Result<std::collections::BTreeMap<String, String>, OpError> {
        let mut f = std::collections::BTreeMap::new();
        f.insert(
            "spec".to_owned(),
            format!("sha256:{}", &sha256_hex(self.spec_text.as_bytes())[..16]),
        );
        for o in &self.observed.resources {
            if o.address.kind == crate::graph::Kind::Secret {
                continue;
            }
            let config = sha256_hex(
                serde_json::to_string(&o.attrs)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            let state = if o.drift.is_empty() {
                "as configured".to_owned()
            } else {
                o.drift
                    .iter()
                    .map(|d| format!("{} {}", d.field, d.observed))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mut v = format!(
                "id {}, config sha256:{}, {state}",
                crate::engine::names::short(o.id.as_deref().unwrap_or("-")),
                &config[..12]
            );
            if let Some(image) = &o.image {
                v.push_str(&format!(", image {}", short_image(image)));
            }
            f.insert(o.address.to_string(), v);
        }
        for (name, file) in &self.secrets.files {
            f.insert(
                format!("secret.{name} file"),
                format!(
                    "{}, mode {:04o}, recipients {}",
                    file.fingerprint,
                    file.mode,
                    file.recorded.as_ref().map_or_else(
                        || crate::secrets::files::NOT_RECORDED.to_owned(),
                        |r| r.join(" ")
                    )
                ),
            );
        }
        if self.project.spec.secrets.iter().next().is_some() {
            let path = &self.secrets.identity_path;
            let mode = crate::fsutil::mode_of(path)
                .map_or_else(|_| "missing".to_owned(), |m| format!("mode {m:04o}"));
            let key = self
                .secrets
                .identity
                .as_ref()
                .and_then(|i| i.recipients().first().cloned())
                .unwrap_or_else(|| "unreadable".into());
            f.insert(
                "identity".to_owned(),
                format!("{}, {mode}, key {key}", path.display()),
            );
        }
        let mut images = std::collections::BTreeSet::new();
        for r in self.graph.in_order() {
            use crate::resources::attr;
            if let Some(b) = r.attrs.get(attr::BUILD_IMAGE) {
                f.insert(format!("{} build", r.address), b.to_owned());
            } else if let Some(i) = r.attrs.get(attr::IMAGE) {
                let region = r
                    .address
                    .region
                    .as_deref()
                    .unwrap_or_else(|| self.project.spec.primary_region())
                    .to_owned();
                images.insert((i.to_owned(), region));
            }
        }
        let resolved = self.project.runtime.block_on(async {
            let mut out = Vec::new();
            for (image, region) in &images {
                let Some(engine) = self.project.engines.get(region) else {
                    continue;
                };
                let id = match engine.image_present(image).await? {
                    true => short_image(&engine.image_id(image).await?).to_owned(),
                    false => "absent (to be pulled)".to_owned(),
                };
                out.push((format!("image {image}@{region}"), id));
            }
            Ok::<_, OpError>(out)
        })?;
        f.extend(resolved);
        Ok(f)
    }
}
