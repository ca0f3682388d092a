//! busway on one machine: the embedded adapters of the ports (SQLite, folders), the local
//! provisioning runner, and the host that serves the portal and broker APIs.

pub mod backup;
pub mod claim_checks;
pub mod delivery;
pub mod demo;
pub mod eventlog;
pub mod feed;
pub mod flow;
pub mod metrics;
pub mod migrations;
pub mod objects;
pub mod provisioning;
pub mod queues;
pub mod retention;
pub mod server;
pub mod store;
pub mod target;
pub mod ui;

pub use server::{Config, Running};
