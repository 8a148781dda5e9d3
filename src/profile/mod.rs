//! The cluster profile: the one YAML document that describes a talos-pve cluster.
//!
//! This module owns the *shape* of the profile (serde types, defaults) and loading it
//! from disk with precise errors. It does not judge whether the network plan makes sense
//! (that is `lint`) nor derive anything (that is `plan`).

mod load;
mod types;
mod wiring;

pub(crate) use load::tidy_message;
pub use load::{ProfileError, load, parse};
pub use types::*;
pub use wiring::Refusal;
