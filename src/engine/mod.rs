//! Effectful adapters. [`docker`] talks to a region's container engine through bollard (never
//! the docker CLI); [`labels`] is the contract between what berth writes on the engine's
//! objects and what observation reads back.

pub mod context;
pub mod docker;
pub mod labels;

pub use docker::{Engine, EngineError};
