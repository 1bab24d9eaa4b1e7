//! Every region's engine, as the spec says how to reach it: the address, and for a TLS
//! `tcp://` engine its files read (paths relative to the spec; the client key a file whose
//! mode is checked like the identity's, or a secret of the spec decrypted in memory with
//! the identity). Connected concurrently, then checked: one engine, one region.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::engine::{Engine, EngineError, Target, TlsMaterial};
use crate::fsutil;
use crate::secrets::age::Identity;
use crate::secrets::files::{identity_path, resolve_secret_path};
use crate::spec::{Spec, Tls, TlsKey};

/// How to reach region `name`'s engine.
pub fn target(spec: &Spec, spec_dir: &Path, name: &str) -> Result<Target, EngineError> {
    let Some(region) = spec.regions.get(name) else {
        return env_target(name);
    };
    let tls = match &region.tls {
        Some(tls) if region.engine.value.starts_with("tcp://") => {
            Some(read_tls(spec, spec_dir, name, tls)?)
        }
        _ => None,
    };
    Ok(Target {
        endpoint: Some(region.engine.value.clone()),
        tls,
    })
}

/// A spec without regions reaches DOCKER_HOST (or the local socket) as the docker CLI
/// does: a `tcp://` DOCKER_HOST with DOCKER_TLS_VERIFY set over TLS, trusting `ca.pem` and
/// presenting `cert.pem` and `key.pem` (a file private to its user) of DOCKER_CERT_PATH
/// (by default `~/.docker`).
fn env_target(region: &str) -> Result<Target, EngineError> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(host) = set("DOCKER_HOST").filter(|h| h.starts_with("tcp://")) else {
        return Ok(Target::default());
    };
    if set("DOCKER_TLS_VERIFY").is_none() {
        return Ok(Target::default());
    }
    let dir = set("DOCKER_CERT_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| fsutil::expand_home("~/.docker"));
    let read = |file: &str| -> Result<Vec<u8>, EngineError> {
        let path = dir.join(file);
        std::fs::read(&path).map_err(|e| {
            tls_error(
                region,
                &path,
                e.to_string(),
                &format!(
                    "DOCKER_TLS_VERIFY is set, so berth reaches {host} over TLS with `ca.pem`, `cert.pem` and `key.pem` of DOCKER_CERT_PATH ({}), as the docker CLI does",
                    dir.display()
                ),
            )
        })
    };
    let tls = TlsMaterial {
        ca: read("ca.pem")?,
        cert: read("cert.pem")?,
        key: read_private(region, &dir.join("key.pem"))?,
    };
    Ok(Target {
        endpoint: None,
        tls: Some(tls),
    })
}

fn tls_error(region: &str, path: &Path, reason: String, help: &str) -> EngineError {
    EngineError::TlsFile {
        region: region.to_owned(),
        path: path.to_owned(),
        reason,
        help: format!("{help}; nothing was changed"),
    }
}

fn read_tls(
    spec: &Spec,
    spec_dir: &Path,
    region: &str,
    tls: &Tls,
) -> Result<TlsMaterial, EngineError> {
    let read = |file: &str| -> Result<Vec<u8>, EngineError> {
        let path = spec_dir.join(fsutil::expand_home(file));
        std::fs::read(&path).map_err(|e| {
            tls_error(
                region,
                &path,
                e.to_string(),
                "`tls` paths are relative to the spec's directory",
            )
        })
    };
    let ca = read(&tls.ca)?;
    let cert = read(&tls.cert)?;
    let key = match &tls.key {
        TlsKey::File(file) => {
            let path = spec_dir.join(fsutil::expand_home(file));
            read_private(region, &path)?
        }
        TlsKey::Secret(s) => decrypt_secret(spec, spec_dir, region, &s.secret.value)?,
    };
    Ok(TlsMaterial { ca, cert, key })
}

/// A key file private to its user (the identity's rule: no access for group or others).
fn read_private(region: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>, EngineError> {
    let shown = path.display().to_string();
    let mode = fsutil::mode_of(path).map_err(|e| {
        tls_error(
            region,
            path,
            e.to_string(),
            "`tls.key` is a path relative to the spec's directory, or `{ secret: NAME }`",
        )
    })?;
    if fsutil::others_may_access(mode) {
        return Err(tls_error(
            region,
            path,
            format!("mode {mode:04o}: other users may read the client key"),
            &format!(
                "run `chmod 600 {shown}`; if other users could read it, treat the key as leaked: issue a new client certificate"
            ),
        ));
    }
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| tls_error(region, path, e.to_string(), "run berth as the key's owner"))
}

/// The plaintext of secret `name` of the spec, decrypted with the identity.
fn decrypt_secret(
    spec: &Spec,
    spec_dir: &Path,
    region: &str,
    name: &str,
) -> Result<Zeroizing<Vec<u8>>, EngineError> {
    let Some(secret) = spec.secrets.get(name) else {
        return Err(tls_error(
            region,
            Path::new(name),
            "no such secret".to_owned(),
            "define the secret under `secrets:`",
        ));
    };
    let shown = PathBuf::from(&secret.file.value);
    let path = resolve_secret_path(spec_dir, secret).map_err(|e| {
        tls_error(
            region,
            &shown,
            e.to_string(),
            "keep the secret's file in the spec's directory, or say `allow_outside: true`",
        )
    })?;
    let ciphertext = std::fs::read(&path).map_err(|e| {
        tls_error(
            region,
            &path,
            e.to_string(),
            "create it with `berth secrets set`",
        )
    })?;
    let identity_path = identity_path(spec, spec_dir);
    let identity = read_private(region, &identity_path)
        .and_then(|_| {
            Identity::load(&identity_path).map_err(|e| {
                tls_error(
                    region,
                    &identity_path,
                    e.to_string(),
                    "the identity decrypts the client key: point `identity:` (or $BERTH_IDENTITY) at your age key",
                )
            })
        })?;
    let plaintext = identity.decrypt(&ciphertext).map_err(|e| {
        tls_error(
            region,
            &path,
            e.to_string(),
            "the identity cannot decrypt it: re-encrypt it to your recipient (`berth secrets set`)",
        )
    })?;
    Ok(Zeroizing::new(plaintext.expose().to_vec()))
}

/// Connects to every region's engine (or only those of `only`, when it names any: the
/// others are not even connected), concurrently, and refuses two regions on one engine,
/// before anything is asked of any of them.
pub async fn connect_all(
    spec: &Spec,
    spec_dir: &Path,
    only: &[String],
) -> Result<HashMap<String, Engine>, EngineError> {
    let all = spec.region_names();
    let names: Vec<&str> = all
        .iter()
        .copied()
        .filter(|n| only.is_empty() || only.iter().any(|o| o == n))
        .collect();
    let all = &all;
    let connections = names
        .iter()
        .map(|name| connect_one(spec, spec_dir, name, all, None));
    let engines = futures_util::future::try_join_all(connections).await?;
    one_engine_per_region(&engines).await?;
    Ok(engines.into_iter().map(|e| (e.region.clone(), e)).collect())
}

/// Connects to region `name`'s engine, told the spec's regions (`all`): objects labelled
/// for any other of them are not this one's. With `observing`, that project's containers
/// and volumes are listed while connecting ([`Engine::connect_for`]).
pub async fn connect_one(
    spec: &Spec,
    spec_dir: &Path,
    name: &str,
    all: &[&str],
    observing: Option<&str>,
) -> Result<Engine, EngineError> {
    let target = target(spec, spec_dir, name)?;
    let mut engine = Engine::connect_for(name, &target, observing).await?;
    engine.set_regions(all);
    Ok(engine)
}

/// The first two regions (in the order given: the primary first) on one engine.
pub async fn one_engine_per_region(engines: &[Engine]) -> Result<(), EngineError> {
    for (i, a) in engines.iter().enumerate() {
        for b in &engines[i + 1..] {
            if a.same_engine(b).await? {
                return Err(EngineError::SameEngine {
                    first: a.region.clone(),
                    second: b.region.clone(),
                    id: a.id().await?,
                });
            }
        }
    }
    Ok(())
}
