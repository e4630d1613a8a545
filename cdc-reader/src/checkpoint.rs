//! The reader's checkpoint. Its type and wire form live in
//! [`rps_core::checkpoint`], so that `rpsctl status` and the recovery
//! bootstrap read what the reader writes with the same code.

pub use rps_core::checkpoint::{Checkpoint, CheckpointError};
