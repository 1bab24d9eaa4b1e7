//! The proxy's rendered config, read back from its container: the labels keep only a digest
//! of it (`labels::DIGESTED`), and what nginx was given is what counts, compared as text.

use super::ObservedResource;
use crate::engine::{Engine, EngineError};
use crate::graph::Kind;
use crate::resources::attr;

/// Puts the config each proxy container holds into its observed attributes (in place of the
/// digest its labels keep). A container without the file keeps an empty config: the plan
/// then updates it.
pub async fn read_configs(
    engine: &Engine,
    found: &mut [ObservedResource],
) -> Result<(), EngineError> {
    for o in found.iter_mut().filter(|o| o.address.kind == Kind::Proxy) {
        let Some(id) = o.id.clone() else { continue };
        if !o.attrs.contains_key(attr::CONFIG) {
            continue; // labels changed by hand: every field differs already
        }
        let text = engine
            .read_file(&id, crate::proxy::CONFIG_PATH)
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        o.attrs.insert(attr::CONFIG, text);
    }
    Ok(())
}
