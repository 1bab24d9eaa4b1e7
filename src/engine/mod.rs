//! Effectful adapters. [`docker`] talks to a region's container engine through bollard (never
//! the docker CLI); [`labels`] is the contract between what berth writes on the engine's
//! objects and what observation reads back; [`names`] how containers and ids are named;
//! [`context`] reads a pod's build context (its tar, its digest); [`targets`] how the spec
//! says to reach each region's engine, and the check that no two regions share one.

pub mod context;
pub mod docker;
pub mod labels;
pub mod names;
pub mod targets;

pub use docker::{Engine, EngineError};

/// The async runtime berth drives its engines on (and every other async call: a
/// notification's POST): one thread, made the same way wherever a command needs one.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
