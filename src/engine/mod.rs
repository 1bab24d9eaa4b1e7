//! Effectful adapters. [`docker`] talks to a region's container engine through bollard (never
//! the docker CLI); [`labels`] is the contract between what berth writes on the engine's
//! objects and what observation reads back; [`names`] how containers and ids are named;
//! [`context`] reads a pod's build context (its tar, its digest).

pub mod context;
pub mod docker;
pub mod labels;
pub mod names;

pub use docker::{Engine, EngineError};
