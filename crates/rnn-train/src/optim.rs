//! Optimisers, learning-rate schedules and gradient clipping (being written).
