//! Black-box tests against a real server on a random loopback port.
#![allow(clippy::unwrap_used)]

mod abuse;
mod audit;
mod cli;
mod cluster;
mod crowd;
mod faults;
mod helpers;
mod http;
mod join;
mod lifecycle;
mod limits;
mod no_storage;
mod options;
mod relay;
mod store;
mod transport;
