//! simulator (being built).
