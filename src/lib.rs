//! berth: declarative plan/apply deployments of containerised applications.
//!
//! The pipeline, and the module that owns each stage:
//!
//! ```text
//! berth.yaml --spec::load--> Spec (typed, spans kept) --spec::check/lint--> diagnostics
//!            --resources--> ResourceGraph (graph: addresses, petgraph DAG)
//! old spec / engines --observe--> ObservedState (plain data)
//! (ResourceGraph, ObservedState) --plan--> Plan (plain data, pure, no I/O)
//! Plan --plan::render--> human | json | markdown
//! Plan --apply--> steps on the engines, each with its undo; gates; rollback
//! ```
//!
//! - [`spec`] reads `berth.yaml` (and owns the checked-in `schemas/berth.schema.json`);
//! - [`diag`] is the one place diagnostics are rendered (miette for people, JSON for CI);
//! - [`graph`] and [`resources`] turn a spec into addressed resources and their DAG;
//! - [`observe`] holds what exists, [`plan`] compares and renders, [`apply`] executes;
//! - [`engine`] talks to container engines (bollard) and owns the labels berth writes;
//! - [`secrets`] holds the plaintext type that can never be printed; [`sensitive`] recognises
//!   credentials written where they should not be (for lints, plans and snippets);
//! - [`encode`] is hex encoding, written once, and [`clock`] the time in seconds and its UTC
//!   form (the bottom layer);
//! - [`archive`] is backup data (manifest, pipeline, store, retention, timers, refill) that
//!   observe and apply read and write; [`backup`] orchestrates backups and restores on it;
//! - [`project`] is the project context (spec, its directories, engines, identity) they share;
//! - [`error`] is the one error of the commands ([`error::OpError`]), above apply, below backup;
//! - [`ops`] are the operations; [`cli`] is a thin layer of clap commands over them.

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
pub mod resources;
pub mod secrets;
pub mod sensitive;
pub mod spec;
pub mod state;
