//! compensator (being built).
