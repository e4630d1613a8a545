//! projector (being built).
