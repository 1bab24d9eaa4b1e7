//! Effectful adapters. [`docker`] talks to a region's container engine through bollard (never
//! the docker CLI); [`labels`] is the contract between what berth writes on the engine's
//! objects and what observation reads back; [`names`] how containers and ids are named;
//! [`context`] reads a pod's build context (its tar, its digest). How the spec says to reach
//! each region's engine is `observe::targets`'s (it reads the spec and secrets).

pub mod context;
pub mod docker;
pub mod labels;
pub mod names;
pub mod secrets;

pub use docker::{Engine, EngineError, Target, TlsMaterial};

/// The async runtime berth drives its engines on (and every other async call: a
/// notification's POST): one thread, made the same way wherever a command needs one.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
