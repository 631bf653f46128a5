//! What every Unicorn crate shares and none owns: the one shape in which long work
//! (loading, quantizing, converting, pulling, comparing) reports its [`Progress`],
//! and [`atomic`] outputs, which appear whole or not at all and replace only what
//! this program wrote before.

pub mod atomic;
pub mod progress;

pub use progress::{Meter, Progress};
