//! The command line's job commands (the rest lives in main.rs).

pub mod demo;
pub mod jobs;
pub mod peer;
