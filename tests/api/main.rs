//! One integration-test binary: every test starts the real application (or
//! the real binary) on a random port with a fresh store and talks HTTP.

mod auth;
mod claim_shapes;
mod concurrency;
mod crash;
mod errors;
mod golden;
mod health;
mod helpers;
mod ledger;
mod limits;
mod listing;
mod maintenance;
mod openapi;
mod policy_data;
mod postgres;
mod postgres_tls;
mod privacy;
mod reports;
mod simulations;
mod startup;
mod store_faults;
