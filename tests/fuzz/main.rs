//! The fuzzer, in a test binary of its own: it keeps both cores busy for half a minute, and the
//! tests of `tests/api` that time a client's key derivation should not share the machine with it.
#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod fuzz;
