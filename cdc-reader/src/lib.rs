//! cdc-reader (being built).
