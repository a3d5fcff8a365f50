//! The client and the roster CLI against the real service (started in
//! process on a random port with a temporary store). One test binary.

mod api;
mod cli;
mod helpers;
