//! `berth backup drill NAME [ID]`: a backup proven by restoring it. The backup is put into
//! a scratch volume of a scratch project (`PROJECT-drill-XXXXXX`, see
//! [`crate::ops::drill`]), a copy of the pod that owns the volume is started on it on the
//! scratch project's own network, with nothing published on the host, and held to the
//! pod's gates (running, health, `checks:`) and the backup's `drill.check` command. A
//! command's output is drilled the other way round: the scratch copy of the source's pod
//! is started on empty volumes first, then the backup is piped into the source's `restore`
//! command in it, then `drill.check`. The time
//! from the first step to the last gate is the measured restore time (RTO). Then the scratch
//! project is removed, whatever happened; the live pods and volumes are never touched.
//!
//! While it runs, `STATE/drill.json` names the scratch project: a drill that is killed
//! leaves it, and `berth recover` (or the next drill) removes what the scratch project has
//! on its engine, by its label. The last drill of each backup is kept in
//! `STATE/drills.json`, for `backup list`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ops::{Backups, failed};
use crate::apply::journal::Kind;
use crate::archive::Manifest;
use crate::engine::Engine;
use crate::error::OpError;

/// The file that names a drill's scratch project while it runs.
const MARKER: &str = "drill.json";
/// The last drill of each backup name.
use crate::state::drills::RECORD;
/// Where a drill fails when `BERTH_FAULT_DRILL_KILL` names the point (tests of `recover`).
pub const ENV_FAULT_DRILL_KILL: &str = "BERTH_FAULT_DRILL_KILL";

/// What a drill derives from the spec (the session that applies it is the caller's,
/// [`ApplyScratch`]; `ops::drill` derives the spec): the scratch project's name, the pod
/// that owns the drilled data, the volume (empty for a command's output), the image the
/// pod runs now (by id), the region
/// whose engine holds them, and whether the pod is wanted yet (first the volumes alone, to
/// be filled, then the pod on them).
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    pub project: String,
    pub pod: String,
    pub volume: String,
    pub image: String,
    pub region: String,
    pub with_pod: bool,
}

/// Plans and applies a drill's scratch spec, in its own state directory and under its own
/// lock, telling `progress` each step (a session: `ops`'s, above this layer).
pub trait ApplyScratch {
    fn apply_scratch(
        &self,
        scratch: &Scratch,
        state_dir: &std::path::Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), OpError>;
}

/// A drill under way: what to remove if it is killed.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// The scratch project, whose label marks everything the drill made.
    project: String,
    /// The backup drilled, whose region's engine holds the scratch project.
    backup: String,
    region: String,
    /// The scratch project's state directory.
    state_dir: PathBuf,
}

/// A drill that went through: the backup, and how long each part took.
#[derive(Clone, Debug)]
pub struct Drilled {
    pub id: String,
    pub pod: String,
    /// Restoring the backup into the scratch volume (decrypted, checked, unpacked).
    pub restored: Duration,
    /// Starting the scratch pod and holding it to its gates.
    pub started: Duration,
    /// `drill.check`, when the backup has one.
    pub checked: Option<Duration>,
    /// From the first step to the last gate: the measured restore time.
    pub total: Duration,
    pub plain_bytes: u64,
}

pub use crate::state::drills::LastDrill;

impl Backups {
    /// Drills backup `id` of `name` (default: the newest verified one whose time is
    /// trusted, as `restore` picks), telling `progress` each step. Under the project's
    /// lock; a killed drill's leftovers are removed first.
    pub fn drill(
        &self,
        name: &str,
        id: Option<&str>,
        applier: &dyn ApplyScratch,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Drilled, OpError> {
        let source = &self.get(name)?.source.value;
        // A volume is restored into a scratch volume; a command's output is piped into its
        // `restore` command in a scratch copy of its pod (an empty one: a fresh database).
        let volume = source.volume.as_ref().map(|v| v.value.clone());
        let exec_pod = source
            .restore
            .as_ref()
            .and(source.pod.as_ref())
            .map(|p| p.value.clone());
        if volume.is_none() && exec_pod.is_none() {
            return Err(failed(
                name,
                if source.path.is_some() {
                    "a drill restores a volume backup into a scratch volume, or pipes a command's output into its `restore` command in a scratch pod, and this backup is of a host path"
                } else {
                    "a drill pipes a command's output into the source's `restore` command in a scratch copy of the pod, and this source has no `restore`"
                },
                if source.path.is_some() {
                    "restore it beside the data to look at it: `berth backup restore NAME --to-path DIR`"
                } else {
                    "add `restore: [...]` to the source (e.g. `[pg_restore, -d, shop]`)"
                },
            ));
        }
        let _lock = self.lock("berth backup drill")?;
        self.refuse_if_interrupted(&[Kind::Restore])?;
        if let Some(line) = self.sweep_drill()? {
            progress(&line);
        }
        let manifest = self.choose(name, id)?;
        let (pod, volume) = match volume {
            Some(volume) => (self.owner(name, &volume)?, volume),
            None => (exec_pod.unwrap_or_default(), String::new()),
        };
        let engine = self.engine(name)?;
        let project = self.project.name().to_owned();
        let image = self
            .project
            .runtime
            .block_on(running_image(engine, &project, &pod))?;
        let image = image.ok_or_else(|| {
            failed(
                name,
                format!(
                    "pod `{pod}`, which owns the data, has no container here to take its image from"
                ),
                "apply the spec first: the drill starts a copy of the pod as it runs",
            )
        })?;
        let mut suffix = [0u8; 3];
        let _ = getrandom::fill(&mut suffix);
        let scratch = Scratch {
            project: format!("{project}-drill-{}", crate::encode::hex(&suffix)),
            pod,
            volume,
            image,
            region: self.region(name)?,
            with_pod: false,
        };
        let marker = Marker {
            project: scratch.project.clone(),
            backup: name.to_owned(),
            region: scratch.region.clone(),
            state_dir: self.project.state.file("drill"),
        };
        self.project.state.write(
            MARKER,
            serde_json::to_string(&marker)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        progress(&if scratch.volume.is_empty() {
            format!(
                "drill of {name} {}: restoring into scratch project {} (a copy of pod `{}`, through its `restore` command)",
                manifest.id, scratch.project, scratch.pod
            )
        } else {
            format!(
                "drill of {name} {}: restoring into scratch project {} (pod `{}` on a copy of volume `{}`)",
                manifest.id, scratch.project, scratch.pod, scratch.volume
            )
        });
        let outcome = self.drill_in(
            name,
            &manifest,
            scratch,
            (applier, &marker.state_dir),
            progress,
        );
        let swept = self.sweep_drill();
        self.record_drill(name, &manifest.id, outcome.as_ref().ok())?;
        let drilled = outcome?;
        swept?;
        Ok(drilled)
    }

    /// The steps of a drill, in the scratch project: its volumes made, the backup put into
    /// the drilled one (checked against its manifest as it streams), the pod started and
    /// held to its gates, `drill.check` run in it.
    fn drill_in(
        &self,
        name: &str,
        manifest: &Manifest,
        mut scratch: Scratch,
        (applier, state_dir): (&dyn ApplyScratch, &std::path::Path),
        progress: &mut dyn FnMut(&str),
    ) -> Result<Drilled, OpError> {
        if scratch.volume.is_empty() {
            return self.drill_exec(name, manifest, scratch, (applier, state_dir), progress);
        }
        let began = Instant::now();
        applier.apply_scratch(&scratch, state_dir, progress)?;
        crate::archive::helpers::fault_point(ENV_FAULT_DRILL_KILL, "volumes");
        let engine = self.engine(name)?;
        let object = crate::apply::container::object_name(&scratch.project, &scratch.volume);
        let from = self.backup_ref(name, &manifest.id)?;
        let stats = self.project.runtime.block_on(async {
            let labels: BTreeMap<String, String> = engine
                .volumes(&scratch.project)
                .await?
                .into_iter()
                .find(|v| v.name == object)
                .map(|v| v.labels.into_iter().collect())
                .unwrap_or_default();
            crate::archive::refill::refill_volume(
                engine,
                &scratch.project,
                &object,
                &labels,
                &scratch.image,
                &from,
            )
            .await
            .map_err(|e| {
                failed(
                    name,
                    format!("restoring it into the scratch volume: {e}"),
                    "verify the backup: `berth backup verify`",
                )
            })
        })?;
        self.held_to_manifest(name, &manifest.id, &stats)?;
        let restored = began.elapsed();
        progress(&format!(
            "  restored {} bytes into the scratch volume in {:.1} s",
            stats.plain_bytes,
            restored.as_secs_f64()
        ));
        crate::archive::helpers::fault_point(ENV_FAULT_DRILL_KILL, "restored");
        start_pod(&mut scratch, (applier, state_dir), progress)?;
        let started = began.elapsed() - restored;
        self.checked(
            name,
            manifest,
            scratch,
            (began, restored, started),
            &stats,
            progress,
        )
    }

    /// The steps of a drill of a command's output: the scratch pod started on empty volumes
    /// and held to its gates, the backup piped into the source's `restore` command in it
    /// (checked against its manifest as it streams), its health gate and `checks:` held
    /// again, `drill.check` run in it.
    fn drill_exec(
        &self,
        name: &str,
        manifest: &Manifest,
        mut scratch: Scratch,
        (applier, state_dir): (&dyn ApplyScratch, &std::path::Path),
        progress: &mut dyn FnMut(&str),
    ) -> Result<Drilled, OpError> {
        let cmd = self
            .get(name)?
            .source
            .value
            .restore
            .clone()
            .unwrap_or_default();
        let began = Instant::now();
        start_pod(&mut scratch, (applier, state_dir), progress)?;
        let started = began.elapsed();
        let engine = self.engine(name)?;
        let container = self
            .project
            .runtime
            .block_on(scratch_container(engine, &scratch))
            .map_err(|why| failed(name, why, "run the drill again"))?;
        let stats = self.pipe_into_container(name, &container, &cmd, manifest)?;
        self.held_to_manifest(name, &manifest.id, &stats)?;
        let restored = began.elapsed() - started;
        progress(&format!(
            "  piped {} bytes into `{}` in the scratch pod in {:.1} s",
            stats.plain_bytes,
            cmd.join(" "),
            restored.as_secs_f64()
        ));
        // Its gates again, now on the restored data.
        self.gate_on(name, &scratch.pod, &scratch.project, &container)?;
        progress(&format!(
            "  pod `{}` passed its gates again on the restored data",
            scratch.pod
        ));
        crate::archive::helpers::fault_point(ENV_FAULT_DRILL_KILL, "restored");
        self.checked(
            name,
            manifest,
            scratch,
            (began, restored, started),
            &stats,
            progress,
        )
    }

    /// What was put back (`stats`) held to the backup's manifest.
    pub(in crate::backup) fn held_to_manifest(
        &self,
        name: &str,
        id: &str,
        stats: &crate::archive::pipeline::Stats,
    ) -> Result<(), OpError> {
        self.backup_ref(name, id)?.check(stats).map_err(|e| {
            failed(
                name,
                e.to_string(),
                "the backup is damaged: use another (`berth backup list`)",
            )
        })
    }

    /// A drill's last step, the backup's `drill.check` run in the scratch pod (when it has
    /// one), and what the drill measured: `began` when it did, how long the restore and the
    /// pod's start took.
    fn checked(
        &self,
        name: &str,
        manifest: &Manifest,
        scratch: Scratch,
        (began, restored, started): (Instant, Duration, Duration),
        stats: &crate::archive::pipeline::Stats,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Drilled, OpError> {
        let check = self
            .get(name)?
            .drill
            .as_ref()
            .and_then(|d| d.value.check.clone());
        let checked = match check {
            Some(cmd) => {
                let engine = self.engine(name)?;
                let at = Instant::now();
                self.project
                    .runtime
                    .block_on(drill_check(engine, &scratch, &cmd))
                    .map_err(|why| failed(name, why, "run the check by hand in a copy of the pod to see why; the drill's scratch project is removed"))?;
                progress(&format!("  drill.check `{}` exited 0", cmd.join(" ")));
                Some(at.elapsed())
            }
            None => None,
        };
        Ok(Drilled {
            id: manifest.id.clone(),
            pod: scratch.pod,
            restored,
            started,
            checked,
            total: began.elapsed(),
            plain_bytes: stats.plain_bytes,
        })
    }

    /// The pod whose copy a drill of `name` starts: `drill.pod`, else the one pod of the
    /// spec that mounts `volume` (refused when none or several do).
    fn owner(&self, name: &str, volume: &str) -> Result<String, OpError> {
        if let Some(pod) = self
            .get(name)?
            .drill
            .as_ref()
            .and_then(|d| d.value.pod.as_ref())
        {
            return Ok(pod.value.clone());
        }
        let owners: Vec<&str> = self
            .project
            .spec
            .pods
            .iter()
            .filter(|p| p.item.named_volumes().any(|v| v == volume))
            .map(|p| p.name.value.as_str())
            .collect();
        match owners.as_slice() {
            [one] => Ok((*one).to_owned()),
            [] => Err(failed(
                name,
                format!(
                    "no pod mounts volume `{volume}`: a drill starts a copy of the pod that owns the data"
                ),
                "mount the volume in the pod that reads it, or drill by hand",
            )),
            many => Err(failed(
                name,
                format!("pods {} all mount volume `{volume}`", many.join(", ")),
                "say which one the drill starts: `drill: { pod: NAME }` on the backup",
            )),
        }
    }

    /// The backups of the spec at `path`, connected to the region whose engine a killed
    /// drill left its scratch project on; `None` when no drill was under way.
    pub fn open_for_drill_sweep(
        path: &std::path::Path,
        state_dir: Option<&std::path::Path>,
    ) -> Result<Option<Backups>, OpError> {
        let b = Backups::open(path, state_dir, Some(&[]))?;
        let Some(marker) = b.marker() else {
            return Ok(None);
        };
        Ok(Some(Backups::open(
            path,
            state_dir,
            Some(&[marker.backup]),
        )?))
    }

    /// [`Backups::sweep_drill`] under the project's lock (`berth recover`).
    pub fn recover_drill(&self) -> Result<Option<String>, OpError> {
        let _lock = self.lock("berth recover")?;
        self.sweep_drill()
    }

    fn marker(&self) -> Option<Marker> {
        let text = std::fs::read(self.project.state.file(MARKER)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Removes what a drill's scratch project has on its engine (containers, then
    /// networks, then volumes, all found by the project's label), its state directory, and
    /// the marker; a line saying what was removed, when a drill had been under way.
    pub fn sweep_drill(&self) -> Result<Option<String>, OpError> {
        let Some(marker) = self.marker() else {
            return Ok(None);
        };
        let engine = self
            .project
            .engines
            .get(&marker.region)
            .ok_or_else(|| OpError::Refused {
                message: format!(
                    "a drill of `{}` left scratch project {} on region `{}`, which is not connected",
                    marker.backup, marker.project, marker.region
                ),
                help: "run `berth recover` where that region's engine can be reached".into(),
            })?;
        let removed = self
            .project
            .runtime
            .block_on(sweep(engine, &marker.project))?;
        match std::fs::remove_dir_all(&marker.state_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(OpError::Refused {
                    message: format!(
                        "removing the drill's state `{}`: {e}",
                        marker.state_dir.display()
                    ),
                    help: "remove it by hand".into(),
                });
            }
        }
        let _ = std::fs::remove_file(self.project.state.file(MARKER));
        Ok(Some(format!(
            "drill of `{}`: scratch project {} removed ({removed} object(s) on region `{}`)",
            marker.backup, marker.project, marker.region
        )))
    }

    fn record_drill(&self, name: &str, id: &str, drilled: Option<&Drilled>) -> Result<(), OpError> {
        let mut all = self.drills();
        let now = crate::clock::now();
        let before = all.get(name).and_then(|d| d.last_passed);
        all.insert(
            name.to_owned(),
            LastDrill {
                id: id.to_owned(),
                at: now,
                passed: drilled.is_some(),
                seconds: drilled.map_or(0.0, |d| d.total.as_secs_f64()),
                last_passed: if drilled.is_some() { Some(now) } else { before },
            },
        );
        self.project.state.write(
            RECORD,
            serde_json::to_string_pretty(&all)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Ok(())
    }

    /// The last drill of each backup name.
    pub fn drills(&self) -> BTreeMap<String, LastDrill> {
        crate::state::drills::read(&self.project.state.path)
    }
}

/// The image (by id) of the pod's container on the engine (its first replica), if any.
async fn running_image(
    engine: &Engine,
    project: &str,
    pod: &str,
) -> Result<Option<String>, OpError> {
    let address = crate::graph::Address::new(crate::graph::Kind::Pod, pod);
    let wanted = crate::apply::container::container_name_of(project, &address);
    let containers = engine.containers(project).await?;
    Ok(containers
        .into_iter()
        .find(|c| c.name == wanted || c.name == format!("{wanted}-0"))
        .map(|c| c.image_id))
}

/// Everything of `project` on the engine, removed: containers, networks, volumes. How
/// many objects.
async fn sweep(engine: &Engine, project: &str) -> Result<usize, OpError> {
    let mut removed = 0;
    for c in engine.containers(project).await? {
        engine.remove(&c.id).await?;
        removed += 1;
    }
    for n in engine.networks(project).await? {
        engine.remove_network(&n.name).await?;
        removed += 1;
    }
    for v in engine.volumes(project).await? {
        engine.remove_volume(&v.name).await?;
        removed += 1;
    }
    Ok(removed)
}

/// The id of the scratch pod's container.
async fn scratch_container(engine: &Engine, scratch: &Scratch) -> Result<String, String> {
    let address = crate::graph::Address::new(crate::graph::Kind::Pod, &scratch.pod);
    let name = crate::apply::container::container_name_of(&scratch.project, &address);
    engine
        .container_named(&name)
        .await
        .map_err(|e| e.to_string())?
        .map(|c| c.id)
        .ok_or_else(|| format!("the scratch pod {name} is gone"))
}

/// Runs `cmd` in the scratch pod's container; `Err` with its exit status and the end of
/// its output unless it exits 0.
async fn drill_check(engine: &Engine, scratch: &Scratch, cmd: &[String]) -> Result<(), String> {
    use futures_util::StreamExt;
    let container = scratch_container(engine, scratch).await?;
    let (exec_id, mut io) = engine
        .exec(&container, cmd, false, false)
        .await
        .map_err(|e| e.to_string())?;
    let mut output = Vec::new();
    while let Some(frame) = io.output.next().await {
        if let Ok(frame) = frame {
            output.extend_from_slice(&frame.into_bytes());
            let excess = output.len().saturating_sub(4096);
            output.drain(..excess);
        }
    }
    let code = engine
        .exec_exit_code(&exec_id)
        .await
        .map_err(|e| e.to_string())?;
    if code == Some(0) {
        return Ok(());
    }
    Err(format!(
        "drill.check `{}` exited with {} in the scratch pod: {}",
        cmd.join(" "),
        code.map_or("no status".into(), |c| c.to_string()),
        String::from_utf8_lossy(&output).trim()
    ))
}

/// The scratch project's pod started (its gates held) beside its volumes.
fn start_pod(
    scratch: &mut Scratch,
    (applier, state_dir): (&dyn ApplyScratch, &std::path::Path),
    progress: &mut dyn FnMut(&str),
) -> Result<(), OpError> {
    scratch.with_pod = true;
    applier.apply_scratch(scratch, state_dir, progress)?;
    crate::archive::helpers::fault_point(ENV_FAULT_DRILL_KILL, "started");
    Ok(())
}
