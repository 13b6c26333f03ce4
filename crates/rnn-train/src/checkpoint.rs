//! Atomic checkpoints (being written).
