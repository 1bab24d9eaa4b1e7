//! berth: declarative plan/apply deployments of containerised applications.
//!
//! The pipeline, and the module that owns each stage:
//!
//! ```text
//! berth.yaml --spec::load--> Spec (typed, spans kept, parsed once) --spec::check/lint--> diagnostics
//!            --resources--> desired resources --graph--> ResourceGraph (addresses, petgraph DAG)
//! engines, secret files, backup stores and timers --observe::observe--> ObservedState (plain data)
//! (ResourceGraph, ObservedState) --plan--> Plan (plain data, pure, no I/O) --plan::render--> human | json | markdown
//! Plan --apply--> steps on the engines, each recording its undo first (journal); gates; one unwind
//! ```
//!
//! `ops::Session::open` runs that pipeline in order (load, lock, target, desired, observe,
//! plan); `cli` is a thin layer of clap commands over `ops`. Each module uses only the
//! modules above it in this list (`tests/it/architecture.rs` fails on an import cycle):
//!
//! - [`clock`], [`encode`], [`fsutil`], [`graph`], [`notify`]: time, hex, files written
//!   safely (and the places berth never touches), addresses and the DAG, notifications;
//! - [`sensitive`] recognises credentials written where they should not be (lints, plans,
//!   snippets); [`diag`] is the one place diagnostics are rendered (miette, JSON for CI);
//! - [`spec`] reads and checks `berth.yaml` (and owns `schemas/berth.schema.json`);
//! - [`engine`] talks to container engines (bollard), owns the labels and names berth writes
//!   and the async runtime; [`secrets`] holds the plaintext type that can never be printed,
//!   age, the secret files and their delivery to containers;
//! - [`proxy`] renders the managed proxy's nginx config from the spec (pure), with the
//!   paths, command and health endpoint the engine side runs it with;
//! - [`resources`] turns a spec into desired resources (attribute keys in `resources::attr`);
//! - [`archive`] is the backup data layer: manifests, stores, the encrypted pipeline,
//!   retention, schedule units, refilling a volume or path, helper containers;
//! - [`observe`] owns all detection and returns the observed state; [`plan`] compares and
//!   renders (and `plan::saved` holds saved plans and snapshots);
//! - [`state`] is the project's directory, lock and revisions;
//! - [`apply`] executes a plan: the journal and its state machine, steps with undo
//!   (`apply::steps`), gates, the one unwind, and `recover`;
//! - [`error`] is `OpError`, what an operation fails with; [`project`] the project context
//!   (spec, its directories, state, engines, identity) a session and backups share;
//! - [`backup`] takes, verifies, prunes and restores backups (journaled, with undo);
//! - [`ops`] is the sequencer behind the commands; [`cli`] the commands.

pub mod apply;
pub mod archive;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod diag;
pub mod encode;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod graph;
pub mod notify;
pub mod observe;
pub mod ops;
pub mod plan;
pub mod project;
pub mod proxy;
pub mod resources;
pub mod secrets;
pub mod sensitive;
pub mod spec;
pub mod state;
