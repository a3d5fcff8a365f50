//! subsidy-service: adjudicates vocational-training and skill subsidies under
//! the Wuyi (武人社〔2020〕21号) and Changxing (长政办发〔2020〕7号) 2020–2021
//! skill-upgrade plans, with every decision explained, cited and recorded.

pub mod access;
pub mod auth;
pub mod configuration;
pub mod domain;
pub mod ledger;
pub mod metrics;
pub mod openapi;
pub mod policy;
pub mod privacy;
pub mod problem;
pub mod routes;
pub mod rules;
pub mod simulation;
pub mod startup;
pub mod telemetry;
