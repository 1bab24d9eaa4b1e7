//! How to take back one mutation, and how to finish a commit: as data, written to the
//! journal before the mutation happens, and carried out by a failed apply's rollback or by
//! `berth recover` after a crash. Every undo is idempotent and safe when the mutation never
//! happened (the process may have died between writing the record and mutating): removing
//! what is not there, or renaming a container to the name it has, does nothing.

use crate::spec::Scheme;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::apply::journal::CommitItem;
use crate::encode::unhex;
use crate::engine::{Engine, EngineError};
use crate::secrets::files;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Undo {
    /// A container about to be created under `name`: remove it (if it is the project's).
    RemoveContainer {
        region: String,
        name: String,
    },
    RemoveNetwork {
        region: String,
        name: String,
    },
    RemoveVolume {
        region: String,
        name: String,
    },
    /// A pod's memory-backed secrets volume about to be created, and its keeper: remove
    /// the keeper (killed), then the volume.
    RemoveSecretsVolume {
        region: String,
        volume: String,
    },
    /// An old container about to be stopped and set aside: give it back its name, and
    /// start it if it was running.
    Restore {
        region: String,
        id: String,
        name: String,
        #[serde(default = "running")]
        was_running: bool,
    },
    /// A secret file about to be rewritten: its previous bytes, mode and record (hex, for
    /// the journal; the ciphertext is public, like the file in git).
    RestoreFile {
        path: PathBuf,
        bytes: String,
        mode: u32,
        record: Option<String>,
    },
    /// A file about to be written where there was none (a systemd unit).
    RemoveFile {
        path: PathBuf,
    },
    /// A backup about to be unpacked beside the data it replaces (a directory inside the
    /// restored path, named `.berth-restore-ID`): removed with what it holds.
    RemoveStaging {
        path: PathBuf,
    },
    /// A secret file's mode about to change.
    RestoreMode {
        path: PathBuf,
        mode: u32,
    },
    /// A blue-green switch: remove the new container, then restore the old one. With
    /// `keep_candidate` (a switch through the proxy) the new container only gives the name
    /// back (named `NAME-berth-next` again) and keeps serving what the proxy sends it until
    /// the proxy's previous config is reloaded; the `RemoveContainer` of its candidate name,
    /// recorded before, removes it after that.
    Unswitch {
        region: String,
        new_id: String,
        old_id: String,
        name: String,
        #[serde(default)]
        keep_candidate: bool,
        /// With `keep_candidate`: the old container's HTTP health check (port and path),
        /// answered before the proxy is given it back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ready: Option<(u16, String)>,
        /// That check speaks TLS (`scheme: https`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ready_https: bool,
    },
    /// The proxy's config about to be replaced (a new config, a blue-green switch, a reload
    /// that looks containers up again): this text goes back into the container named `name`
    /// and nginx reloads it. Recorded before the switch it covers, so that undoing a
    /// replacement first puts the old container back and then reloads.
    ProxyConfig {
        region: String,
        name: String,
        config: String,
    },
    /// A container about to be stopped by a restore: start it again, if it still exists
    /// (the restore may have removed it since; `Reapply` then brings its pod back).
    StartContainer {
        region: String,
        id: String,
    },
    /// A volume about to be emptied by a restore: the safety copy goes back into it (the
    /// containers that mount it removed, the volume made again with these labels, the
    /// copy unpacked into it through a helper container made from `image`).
    RefillVolume {
        region: String,
        volume: String,
        labels: BTreeMap<String, String>,
        image: String,
        /// The safety copy: its store, backup name and id, and the identity that opens it.
        store: PathBuf,
        backup: String,
        id: String,
        identity: PathBuf,
    },
    /// A host directory about to be emptied by a restore: the safety copy goes back (the
    /// project's containers that bind-mount it, in `region`, stopped first).
    RefillPath {
        region: String,
        path: PathBuf,
        store: PathBuf,
        backup: String,
        id: String,
        identity: PathBuf,
    },
    /// The pods of a restored volume about to be removed: the recorded revision is applied
    /// again (after the undos recorded after this one: the data is back first). Carried out
    /// by [`super::unwind::unwind`], through its caller's session; [`perform`] refuses it.
    Reapply {
        revision: u64,
    },
}

impl Undo {
    /// The region whose engine carrying it out needs: `None` for one on this machine's
    /// files; `Some(None)` for one that applies a revision again (every region).
    pub fn engine_region(&self) -> Option<Option<&str>> {
        match self {
            Undo::RemoveContainer { region, .. }
            | Undo::RemoveNetwork { region, .. }
            | Undo::RemoveVolume { region, .. }
            | Undo::RemoveSecretsVolume { region, .. }
            | Undo::Restore { region, .. }
            | Undo::Unswitch { region, .. }
            | Undo::ProxyConfig { region, .. }
            | Undo::StartContainer { region, .. }
            | Undo::RefillVolume { region, .. }
            | Undo::RefillPath { region, .. } => Some(Some(region)),
            Undo::Reapply { .. } => Some(None),
            Undo::RestoreFile { .. }
            | Undo::RemoveFile { .. }
            | Undo::RemoveStaging { .. }
            | Undo::RestoreMode { .. } => None,
        }
    }
}

fn running() -> bool {
    true
}

/// Why an undo (or a commit's removal) was not carried out: said after what it undid, in
/// the lines of a rollback or `recover`, that then leaves its journal for another try.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// The region's engine did not answer when the unwind began.
    #[error("region `{region}` is not connected")]
    NotConnected { region: String },
    /// The engine refused or failed the request.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A file on this machine could not be written or removed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The container to give back its name and start is gone (removed by hand?).
    #[error("container {id} no longer exists")]
    Gone { id: String },
    #[error(
        "the engine refuses to remove network {name}: it has active endpoints, and no container of another project is attached (a container of this project still is?)"
    )]
    NetworkInUse { name: String },
    /// Data could not be put back from the safety copy.
    #[error(transparent)]
    Refill(crate::archive::refill::RefillError),
    /// The revision could not be applied again.
    #[error("{0}")]
    Reapply(#[source] crate::apply::recover::ReapplyError),
    /// A `Reapply` reached [`perform`], which cannot apply a revision.
    #[error("this undo is carried out by the caller, with a session")]
    ByCaller,
}

fn engine<'e>(engines: &'e HashMap<String, Engine>, region: &str) -> Result<&'e Engine, UndoError> {
    engines.get(region).ok_or_else(|| UndoError::NotConnected {
        region: region.to_owned(),
    })
}

/// Gives a container back its name (unless it has it) and starts it.
async fn restore(e: &Engine, id: &str, name: &str, start: bool) -> Result<(), UndoError> {
    match e.name_of(id).await? {
        None => {
            return Err(UndoError::Gone {
                id: short(id).to_owned(),
            });
        }
        Some(current) if current != name => {
            // Held while undoing the create of the container that had it: free it.
            e.release_name(name).await?;
            e.rename(id, name).await?;
        }
        Some(_) => {}
    }
    if !start {
        return Ok(()); // it was stopped before the apply: it stays so
    }
    start_again(e, id).await
}

/// Starts a container that berth stopped (or was about to stop) and that must run again.
/// A berth killed while the engine stopped it leaves that stop in flight: the container
/// may still run, so that a bare start is "already started", and die when the stop ends.
/// Stopping it first waits for any such stop (and is nothing for a stopped container).
async fn start_again(e: &Engine, id: &str) -> Result<(), UndoError> {
    e.stop(id).await?;
    Ok(e.start(id).await?)
}

async fn undo_switch(
    engines: &HashMap<String, Engine>,
    region: &str,
    new_id: &str,
    old_id: &str,
    name: &str,
    keep: Option<Option<(u16, &str, Scheme)>>,
) -> (String, Result<(), UndoError>) {
    let r = async {
        let e = engine(engines, region)?;
        unswitch(e, new_id, old_id, name, keep).await
    };
    let what = format!(
        "{}: switched back to {name} ({})",
        at(region),
        short(old_id)
    );
    (what, r.await)
}

async fn undo_proxy_config(
    engines: &HashMap<String, Engine>,
    region: &str,
    name: &str,
    config: &str,
) -> (String, Result<(), UndoError>) {
    let r = async { put_config_back(engine(engines, region)?, name, config).await };
    (
        format!("{}: the proxy's previous config, reloaded", at(region)),
        r.await,
    )
}

/// Puts `config` back into the proxy container `name` and has nginx reload it (a proxy that
/// is gone or stopped reads it when it starts).
async fn put_config_back(e: &Engine, name: &str, config: &str) -> Result<(), UndoError> {
    let Some(c) = e.container_named(name).await? else {
        return Ok(());
    };
    e.put_file(&c.id, crate::proxy::CONFIG_PATH, config.as_bytes(), 0o644)
        .await?;
    if c.state == "running" {
        // nginx loads it in the background: wait until it has, and its old workers have
        // finished, before what the unwind does next (removing a container only the new
        // config named).
        e.reload_nginx(&c.id, std::time::Duration::from_secs(15))
            .await?;
    }
    Ok(())
}

/// The safety copy a `Refill*` undo puts back: its store, backup name and id, and the
/// identity that opens it.
fn safety_copy(
    store: &std::path::Path,
    backup: &str,
    id: &str,
    identity: &std::path::Path,
) -> crate::archive::refill::BackupRef {
    crate::archive::refill::BackupRef {
        store: store.to_path_buf(),
        name: backup.to_owned(),
        id: id.to_owned(),
        identity: identity.to_path_buf(),
    }
}

/// Carries out one undo; says what it did ("where: what"). One function per kind of undo:
/// on a region's engine (containers, networks, volumes, data put back), or on this machine
/// (files, modes).
pub async fn perform(
    engines: &HashMap<String, Engine>,
    project: &str,
    u: &Undo,
) -> (String, Result<(), UndoError>) {
    match u {
        Undo::RemoveContainer { region, name } => {
            let r = async { remove_container(engine(engines, region)?, project, name).await };
            let what = format!("{}: removed new container {name}", at(region));
            (what, r.await)
        }
        Undo::RemoveNetwork { region, name } => undo_network(engines, project, region, name).await,
        Undo::RemoveVolume { region, name } => {
            let r = async { remove_volume(engine(engines, region)?, name).await };
            let what = format!("{}: removed new volume {name}", at(region));
            (what, r.await)
        }
        Undo::RemoveSecretsVolume { region, volume } => {
            undo_secrets_volume(engines, project, region, volume).await
        }
        Undo::Restore {
            region,
            id,
            name,
            was_running,
        } => {
            let r = async { restore(engine(engines, region)?, id, name, *was_running).await };
            let what = format!("{}: restored {name} ({})", at(region), short(id));
            (what, r.await)
        }
        Undo::Unswitch {
            region,
            new_id,
            old_id,
            name,
            keep_candidate,
            ready,
            ready_https,
        } => {
            let keep = keep_candidate.then_some(readiness(ready, *ready_https));
            undo_switch(engines, region, new_id, old_id, name, keep).await
        }
        Undo::ProxyConfig {
            region,
            name,
            config,
        } => undo_proxy_config(engines, region, name, config).await,
        Undo::RestoreFile {
            path,
            bytes,
            mode,
            record,
        } => (
            format!("on this machine: restored the previous {}", path.display()),
            restore_file(path, bytes, *mode, record.as_deref()),
        ),
        Undo::RemoveFile { path } => (
            format!("on this machine: removed {}", path.display()),
            remove_file(path),
        ),
        Undo::RemoveStaging { path } => remove_staging(path),
        Undo::RestoreMode { path, mode } => (
            format!("on this machine: mode {mode:04o} of {}", path.display()),
            crate::fsutil::set_mode(path, *mode).map_err(UndoError::from),
        ),
        Undo::StartContainer { region, id } => {
            let r = async { start_if_there(engine(engines, region)?, id).await };
            (
                format!("{}: started {} again", at(region), short(id)),
                r.await,
            )
        }
        Undo::RefillVolume {
            region,
            volume,
            labels,
            image,
            store,
            backup,
            id,
            identity,
        } => {
            let from = safety_copy(store, backup, id, identity);
            let r = async {
                let e = engine(engines, region)?;
                let refilled =
                    crate::archive::refill::refill_volume(e, project, volume, labels, image, &from)
                        .await;
                refilled
                    .and_then(|s| from.check(&s))
                    .map_err(UndoError::Refill)
            };
            let what = format!(
                "{}: volume {volume} holds the safety copy {id} again",
                at(region)
            );
            (what, r.await)
        }
        Undo::RefillPath {
            region,
            path,
            store,
            backup,
            id,
            identity,
        } => {
            let from = safety_copy(store, backup, id, identity);
            let r = async { refill_path(engine(engines, region)?, project, path, &from).await };
            let what = format!(
                "on this machine: {} holds the safety copy {id} again",
                path.display()
            );
            (what, r.await)
        }
        Undo::Reapply { revision } => (
            format!("applied revision {revision} again"),
            Err(UndoError::ByCaller),
        ),
    }
}

fn at(region: &str) -> String {
    format!("in `{region}`")
}

/// A secrets volume's keeper removed (killed), then the volume.
async fn undo_secrets_volume(
    engines: &HashMap<String, Engine>,
    project: &str,
    region: &str,
    volume: &str,
) -> (String, Result<(), UndoError>) {
    let r = async {
        let e = engine(engines, region)?;
        Ok(crate::engine::secrets::remove_volume_and_keeper(e, project, volume).await?)
    };
    (
        format!(
            "{}: removed secrets volume {volume} and its keeper",
            at(region)
        ),
        r.await,
    )
}

/// A network removed, or kept (and why) when other projects' containers use it.
async fn undo_network(
    engines: &HashMap<String, Engine>,
    project: &str,
    region: &str,
    name: &str,
) -> (String, Result<(), UndoError>) {
    let r = match engine(engines, region) {
        Ok(e) => remove_network(e, project, name).await,
        Err(x) => Err(x),
    };
    match r {
        Ok(Some(kept)) => (format!("{}: {kept}", at(region)), Ok(())),
        Ok(None) => (format!("{}: removed network {name}", at(region)), Ok(())),
        Err(x) => (format!("{}: removed network {name}", at(region)), Err(x)),
    }
}

/// The engine may still be creating it (berth was killed after asking): the name is held
/// until the caller releases it, once it is found and removed, so that a create still in
/// flight cannot leave it behind.
async fn remove_container(e: &Engine, project: &str, name: &str) -> Result<(), UndoError> {
    Ok(e.remove_named(name, project).await?)
}

async fn remove_volume(e: &Engine, name: &str) -> Result<(), UndoError> {
    Ok(e.remove_volume(name).await?)
}

/// The new container of a blue-green switch goes, and the old one gets its name back.
async fn unswitch(
    e: &Engine,
    new_id: &str,
    old_id: &str,
    name: &str,
    keep: Option<Option<(u16, &str, Scheme)>>,
) -> Result<(), UndoError> {
    let Some(ready) = keep else {
        e.remove(new_id).await?;
        return restore(e, old_id, name, true).await;
    };
    // The candidate gives the name back and runs on until its removal.
    if e.name_of(new_id).await?.as_deref() == Some(name) {
        let candidate = format!("{name}-berth-next");
        e.release_name(&candidate).await?;
        e.rename(new_id, &candidate).await?;
    }
    restore(e, old_id, name, true).await?;
    // The proxy is given the old one back next: it answers first.
    answering(e, old_id, ready).await;
    Ok(())
}

/// An `Unswitch`'s readiness check as the probe takes it.
fn readiness(ready: &Option<(u16, String)>, https: bool) -> Option<(u16, &str, Scheme)> {
    let scheme = if https { Scheme::Https } else { Scheme::Http };
    ready
        .as_ref()
        .map(|(port, path)| (*port, path.as_str(), scheme))
}

/// Waits (at most 60 s) until a container started again answers: its HTTP health check
/// passes, or the engine's healthcheck says healthy, or (with neither) it runs.
async fn answering(e: &Engine, id: &str, http: Option<(u16, &str, Scheme)>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let Ok(state) = e.state(id).await else { return };
        let ok = match http {
            Some(probe) => match state.addresses.values().next() {
                Some(ip) => {
                    crate::apply::gate::http_get(e, ip, probe, std::time::Duration::from_secs(1))
                        .await
                        .is_ok_and(|status| (200..300).contains(&status))
                }
                None => false,
            },
            None => state.running && (state.health.is_empty() || state.health == "healthy"),
        };
        if ok {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A container a restore stopped, started again; removed since, the pod comes back by
/// `Reapply`.
async fn start_if_there(e: &Engine, id: &str) -> Result<(), UndoError> {
    match e.name_of(id).await? {
        None => Ok(()),
        Some(_) => start_again(e, id).await,
    }
}

/// A file's previous bytes and mode, and its record (or none), back.
fn restore_file(
    path: &std::path::Path,
    bytes: &str,
    mode: u32,
    record: Option<&str>,
) -> Result<(), UndoError> {
    crate::fsutil::write_atomic(path, &unhex(bytes), mode)
        .and_then(|()| {
            let record_path = files::record_path(path);
            match record {
                Some(r) => crate::fsutil::write_atomic(&record_path, &unhex(r), files::FILE_MODE),
                None => match std::fs::remove_file(&record_path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            }
        })
        .map_err(UndoError::from)
}

fn remove_file(path: &std::path::Path) -> Result<(), UndoError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// A restore's staging directory removed, if it is there; only a directory of that name
/// (`.berth-restore-…`): a journal edited by hand removes nothing else.
fn remove_staging(path: &std::path::Path) -> (String, Result<(), UndoError>) {
    let what = format!(
        "on this machine: removed the unpacked backup {}",
        path.display()
    );
    let ours = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(STAGING_PREFIX));
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && ours => std::fs::remove_dir_all(path).map_err(UndoError::from),
        Ok(_) => Err(std::io::Error::other(format!(
            "{} is not a restore's staging directory: left as it is",
            path.display()
        ))
        .into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    };
    (what, removed)
}

/// The name a restore's staging directory starts with.
pub const STAGING_PREFIX: &str = ".berth-restore-";

/// A host path back from its safety copy; its users stop first (the undo records before
/// this one start them again).
async fn refill_path(
    e: &Engine,
    project: &str,
    path: &std::path::Path,
    from: &crate::archive::refill::BackupRef,
) -> Result<(), UndoError> {
    for c in e.containers(project).await? {
        if c.state == "running" && crate::archive::refill::binds(&c.binds, path) {
            e.stop(&c.id).await?;
        }
    }
    crate::archive::refill::refill_path(path, from)
        .and_then(|s| from.check(&s))
        .map_err(UndoError::Refill)
}

/// Removes a project's network unless containers of other projects are attached to it:
/// berth never removes those, and the engine cannot remove a network in use. Kept, it says
/// so and why (`Some`); the network stays the project's, and the next plan or apply works
/// with it.
///
/// A container that joins the network between the look and the removal (during a
/// `destroy`) makes the engine refuse ("active endpoints"): the attached containers are
/// listed again, and the network is kept and they are named, as if they had been there
/// from the start, rather than the removal failing.
async fn remove_network(
    e: &Engine,
    project: &str,
    name: &str,
) -> Result<Option<String>, UndoError> {
    use crate::engine::docker::NetworkRemoval;
    // Twice at most: a container that left between a refusal and the second look lets the
    // second removal go through.
    for _ in 0..2 {
        let foreign = e.foreign_on_network(name, project).await?;
        if !foreign.is_empty() {
            return Ok(Some(format!(
                "kept network {name}: containers of other projects are attached to it ({}); disconnect them (`docker network disconnect {name} CONTAINER`) and run `berth destroy` again to remove it",
                foreign.join(", ")
            )));
        }
        if e.remove_network(name).await? == NetworkRemoval::Removed {
            return Ok(None);
        }
    }
    Err(UndoError::NetworkInUse {
        name: name.to_owned(),
    })
}

/// What became of one object a commit let go.
#[derive(Debug)]
pub enum Committed {
    Removed,
    /// Not removed, and rightly so (a network others still use): why, for a warning.
    Kept(String),
}

/// Removes one object a commit let go; says what.
pub async fn commit_one(
    engines: &HashMap<String, Engine>,
    project: &str,
    item: &CommitItem,
) -> (String, Result<Committed, UndoError>) {
    match item {
        CommitItem::Container { region, id } => (
            format!("container {}", short(id)),
            match engine(engines, region) {
                Ok(e) => e
                    .remove(id)
                    .await
                    .map(|()| Committed::Removed)
                    .map_err(UndoError::from),
                Err(x) => Err(x),
            },
        ),
        CommitItem::Network { region, name } => (
            format!("network {name}"),
            match engine(engines, region) {
                Ok(e) => remove_network(e, project, name)
                    .await
                    .map(|kept| kept.map_or(Committed::Removed, Committed::Kept)),
                Err(x) => Err(x),
            },
        ),
        CommitItem::Volume { region, name } => (
            format!("volume {name}"),
            match engine(engines, region) {
                Ok(e) => e
                    .remove_volume(name)
                    .await
                    .map(|()| Committed::Removed)
                    .map_err(UndoError::from),
                Err(x) => Err(x),
            },
        ),
    }
}

use crate::engine::names::short;
