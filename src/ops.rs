//! Operations behind the commands. Each takes paths and options, does its work through the
//! pipeline modules and returns data; printing is the command's business.

use std::path::Path;

use crate::diag::Report;
use crate::graph::{GraphError, ResourceGraph};
use crate::observe::{ObservedState, Origin};
use crate::plan::{Plan, plan};
use crate::resources;
use crate::spec::load::ReadError;
use crate::spec::{Loaded, Spec, load_file};

/// Why an operation could not produce its result.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum OpError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Read(#[from] ReadError),
    /// The spec has errors; the report holds them (already rendered by the caller).
    #[error("`{}` has {} error(s)", .0.path.display(), .0.errors())]
    #[diagnostic(
        code(berth::invalid_spec),
        help("fix the errors above, then run the command again")
    )]
    Invalid(Box<Report>),
    #[error("cannot write `{path}`: {source}")]
    #[diagnostic(
        code(berth::write),
        help("check that the directory exists and is writable")
    )]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Apply(#[from] crate::apply::ApplyError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Context(#[from] crate::engine::context::ContextError),
    #[error("apply needs a confirmation, and there is no terminal to ask on")]
    #[diagnostic(
        code(berth::not_confirmed),
        help("pass --yes to apply without asking (automation), or run on a terminal")
    )]
    NotConfirmed,
    #[error("cannot start berth's async runtime: {0}")]
    #[diagnostic(
        code(berth::runtime),
        help("this is a problem of the machine (threads, file descriptors); try again")
    )]
    Runtime(std::io::Error),
    /// A `berth secrets` command cannot do what was asked.
    #[error("{message}")]
    #[diagnostic(code(berth::secrets), help("{help}"))]
    Secrets { message: String, help: String },
    /// Secrets failed the pre-flight; the report holds each problem (rendered by the caller).
    #[error("{} problem(s) with secrets; nothing was changed", .0.errors())]
    #[diagnostic(
        code(berth::preflight),
        help(
            "fix the problems above, then run the command again (`berth secrets verify` checks them alone)"
        )
    )]
    Preflight(Box<Report>),
    #[error("cannot build the resource graph: {0}")]
    #[diagnostic(
        code(berth::graph),
        help("this is a bug in berth's checks: please report it with the spec")
    )]
    Graph(#[from] GraphError),
}

/// A spec that loaded without errors, with the report of its warnings.
pub struct Valid {
    pub spec: Spec,
    pub report: Report,
}

/// Loads a spec and refuses it if it has errors.
pub fn load_valid(path: &Path) -> Result<Valid, OpError> {
    let Loaded { spec, report } = load_file(path)?;
    match spec {
        Some(spec) if !report.has_errors() => Ok(Valid { spec, report }),
        _ => Err(OpError::Invalid(Box::new(report))),
    }
}

/// The resource graph of a valid spec.
pub fn graph(spec: &Spec) -> Result<ResourceGraph, OpError> {
    Ok(resources::graph(spec)?)
}

/// `plan --against OLD`: what would change going from the old spec to the new one.
pub fn plan_against(new: &Spec, old: &Spec, old_name: &str) -> Result<Plan, OpError> {
    let graph = resources::graph(new)?;
    let observed = observed_from(
        resources::desired(old),
        &old.region_names(),
        &new.region_names(),
        old_name,
    );
    Ok(plan(&new.project.value, &graph, &observed))
}

/// The state a deployment of the old revision left, with addresses in the new revision's
/// form (a second region qualifies every address).
fn observed_from(
    old: Vec<crate::graph::Resource>,
    old_regions: &[&str],
    new_regions: &[&str],
    old_name: &str,
) -> ObservedState {
    let requalify = |a| resources::requalify(a, old_regions, new_regions);
    let resources = old.into_iter().map(|mut r| {
        r.address = requalify(r.address);
        r.depends_on = r.depends_on.into_iter().map(requalify).collect();
        r
    });
    ObservedState::from_resources(
        Origin::Spec {
            file: old_name.to_owned(),
        },
        resources,
    )
}

/// A plan between two spec files, with what it was made from: the new revision's report
/// (warnings), spec and resource graph (what an apply of the plan works from), and the
/// observed state it was compared with (what a saved plan must find unchanged).
pub struct AgainstPlan {
    pub plan: Plan,
    pub new: Report,
    pub spec: Spec,
    pub graph: ResourceGraph,
    pub observed: ObservedState,
}

/// `plan -f NEW --against OLD`: loads, checks and expands both files concurrently (they
/// are independent), then plans.
///
/// The old revision only has to parse and pass the structural checks: its lints are not
/// the pull request's business (a pull request that fixes a lint must be plannable). An
/// empty old file is "nothing deployed yet": `--against /dev/null` plans a first deployment.
pub fn plan_against_files(new: &Path, old: &Path) -> Result<AgainstPlan, OpError> {
    let (new_side, old_side) = std::thread::scope(|s| {
        let old_thread = s.spawn(|| -> Result<_, OpError> {
            let text = read_spec(old)?;
            if crate::spec::load::is_blank(&text) {
                return Ok(None);
            }
            let spec = load_structure(old, text)?;
            let regions: Vec<String> = spec.region_names().iter().map(|r| r.to_string()).collect();
            Ok(Some((regions, resources::desired(&spec))))
        });
        let new_side = (|| -> Result<_, OpError> {
            let valid = load_valid(new)?;
            let graph = ResourceGraph::new(resources::desired(&valid.spec))?;
            Ok((valid, graph))
        })();
        let old_side = old_thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (new_side, old_side)
    });
    let (new_valid, graph) = new_side?;
    let observed = match old_side? {
        None => ObservedState::from_resources(
            Origin::Spec {
                file: old.display().to_string(),
            },
            Vec::new(),
        ),
        Some((old_regions, old_resources)) => {
            let from: Vec<&str> = old_regions.iter().map(String::as_str).collect();
            observed_from(
                old_resources,
                &from,
                &new_valid.spec.region_names(),
                &old.display().to_string(),
            )
        }
    };
    Ok(AgainstPlan {
        plan: plan(&new_valid.spec.project.value, &graph, &observed),
        new: new_valid.report,
        spec: new_valid.spec,
        graph,
        observed,
    })
}

fn read_spec(path: &Path) -> Result<String, OpError> {
    Ok(crate::spec::load::read_text(path)?)
}

/// Parses a spec and runs the structural checks only (no lints).
fn load_structure(path: &Path, text: String) -> Result<Spec, OpError> {
    let source = std::sync::Arc::new(text);
    let (spec, diagnostics) = match crate::spec::load::parse(&source) {
        Ok(spec) => {
            let d = crate::spec::check::check(&spec);
            (Some(spec), d)
        }
        Err(d) => (None, vec![*d]),
    };
    let report = Report::new(path, source, diagnostics);
    match spec {
        Some(spec) if !report.has_errors() => Ok(spec),
        _ => Err(OpError::Invalid(Box::new(report))),
    }
}

/// The content digest of every pod's build context, by pod name (reading the files is
/// observation of the local filesystem, done before planning).
fn build_digests(
    spec: &Spec,
    spec_dir: &Path,
) -> Result<std::collections::HashMap<String, String>, OpError> {
    let mut out = std::collections::HashMap::new();
    for p in spec.pods.iter() {
        if let Some(b) = &p.item.build {
            let dockerfile = b.value.dockerfile.as_deref().unwrap_or("Dockerfile");
            let digest =
                crate::engine::context::digest(&spec_dir.join(&b.value.context), dockerfile)?;
            out.insert(p.name.value.clone(), digest);
        }
    }
    Ok(out)
}

/// Kinds that observation of engines does not see yet: secrets are files (checked by the
/// secrets work), rate limits live in the proxy's config (compared through the proxy's
/// attributes), backups are timers and stores (the backups work).
pub const UNOBSERVED_ON_ENGINES: [crate::graph::Kind; 3] = [
    crate::graph::Kind::Secret,
    crate::graph::Kind::RateLimit,
    crate::graph::Kind::Backup,
];

/// A plan against the live engines, with the number of engine requests it took.
pub struct LivePlan {
    pub plan: Plan,
    pub report: Report,
    pub requests: u64,
}

/// `plan` without `--against`: observes every region's engine, then plans.
pub fn plan_live(path: &Path) -> Result<LivePlan, OpError> {
    let session = Session::open(path, Goal::Spec)?;
    let requests = session.engines.values().map(|e| e.requests()).sum();
    Ok(LivePlan {
        report: session.warnings(),
        plan: session.plan,
        requests,
    })
}

/// What a session converges to: the spec, or nothing (`destroy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goal {
    Spec,
    Nothing,
}

/// A spec, its engines (connected), what they hold, and the plan between them: what
/// `apply` shows, asks about, and then carries out.
pub struct Session {
    runtime: tokio::runtime::Runtime,
    engines: std::collections::HashMap<String, crate::engine::Engine>,
    pub spec: Spec,
    pub report: Report,
    spec_dir: std::path::PathBuf,
    graph: ResourceGraph,
    observed: ObservedState,
    pub plan: Plan,
    secrets: crate::secrets::files::Inspection,
}

/// Secrets are files, seen on this machine rather than on an engine: each one the spec
/// declares is observed as configured, with its drift (mode, recipients) to heal.
fn observe_secret_files(
    graph: &ResourceGraph,
    secrets: &crate::secrets::files::Inspection,
    observed: &mut ObservedState,
) {
    use crate::graph::Kind;
    observed.unobserved.retain(|k| *k != Kind::Secret);
    for r in graph.in_order() {
        if r.address.kind != Kind::Secret {
            continue;
        }
        let drift = secrets
            .files
            .get(&r.address.name)
            .map(|f| f.drift())
            .unwrap_or_default();
        observed.resources.push(crate::observe::ObservedResource {
            address: r.address.clone(),
            attrs: r.attrs.clone(),
            depends_on: r.depends_on.clone(),
            drift,
            id: None,
        });
    }
}

impl Session {
    /// Loads the spec, reads the local facts (build contexts, secret files), connects to
    /// every region's engine, observes and plans.
    pub fn open(path: &Path, goal: Goal) -> Result<Session, OpError> {
        let valid = load_valid(path)?;
        // Relative mounts, build contexts and secret files are relative to the spec,
        // wherever berth runs.
        let spec_dir = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_default();
        let secrets = match goal {
            Goal::Spec => crate::secrets::files::inspect(&valid.spec, &spec_dir),
            // Destroy leaves the secret files alone: they are the repository's.
            Goal::Nothing => crate::secrets::files::Inspection::default(),
        };
        let graph = match goal {
            Goal::Spec => {
                let facts = resources::LocalFacts {
                    build_digests: build_digests(&valid.spec, &spec_dir)?,
                    secret_versions: secrets.versions(),
                };
                ResourceGraph::new(resources::desired_with(&valid.spec, &facts))?
            }
            Goal::Nothing => ResourceGraph::new(Vec::new())?,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(OpError::Runtime)?;
        let (engines, mut observed) = runtime.block_on(observe_engines(&valid.spec))?;
        if goal == Goal::Spec {
            observe_secret_files(&graph, &secrets, &mut observed);
        }
        let plan = plan(&valid.spec.project.value, &graph, &observed);
        Ok(Session {
            runtime,
            engines,
            spec: valid.spec,
            report: valid.report,
            spec_dir,
            graph,
            observed,
            plan,
            secrets,
        })
    }

    /// The secrets pre-flight: `Err` with every problem when apply must not go on.
    pub fn preflight(&self) -> Result<(), OpError> {
        if self.secrets.problems.is_empty() {
            return Ok(());
        }
        Err(OpError::Preflight(Box::new(Report::new(
            &self.report.path,
            self.report.source.clone(),
            self.secrets.problems.clone(),
        ))))
    }

    /// The spec's warnings, with the secrets pre-flight problems as warnings (what `plan`
    /// shows: a plan can be read where the secrets cannot be decrypted).
    pub fn warnings(&self) -> Report {
        let mut diagnostics = self.report.diagnostics.clone();
        diagnostics.extend(self.secrets.problems.iter().cloned().map(|mut d| {
            d.severity = crate::diag::Severity::Warning;
            d
        }));
        Report::new(&self.report.path, self.report.source.clone(), diagnostics)
    }

    /// Carries out the plan; `progress` receives a line per step.
    pub fn apply(
        &self,
        options: crate::apply::Options,
        progress: &mut dyn FnMut(&crate::apply::Event),
    ) -> Result<crate::apply::Applied, crate::apply::ApplyError> {
        let inputs = crate::apply::Inputs {
            spec: &self.spec,
            spec_dir: &self.spec_dir,
            graph: &self.graph,
            observed: &self.observed,
            engines: &self.engines,
            secrets: &self.secrets,
        };
        self.runtime
            .block_on(crate::apply::apply(inputs, &self.plan, options, progress))
    }
}

/// Connects to every region's engine and observes them, concurrently.
pub async fn observe_engines(
    spec: &Spec,
) -> Result<
    (
        std::collections::HashMap<String, crate::engine::Engine>,
        ObservedState,
    ),
    OpError,
> {
    let names = spec.region_names();
    let all = &names;
    let project = spec.project.value.as_str();
    let observations = names.iter().map(|name| async move {
        let endpoint = spec.regions.get(name).map(|r| r.engine.value.as_str());
        let engine = crate::engine::Engine::connect(name, endpoint).await?;
        let shown = resources::shown_region(all, name);
        let found = crate::observe::docker::observe(&engine, project, shown).await?;
        Ok::<_, crate::engine::EngineError>((name.to_string(), engine, found))
    });
    let results = futures_util::future::try_join_all(observations).await?;
    let mut engines = std::collections::HashMap::new();
    let mut resources = Vec::new();
    for (name, engine, found) in results {
        engines.insert(name, engine);
        resources.extend(found);
    }
    let state = ObservedState {
        origin: Origin::Engines {
            regions: names.iter().map(|n| n.to_string()).collect(),
        },
        resources,
        unobserved: UNOBSERVED_ON_ENGINES.to_vec(),
    };
    Ok((engines, state))
}
