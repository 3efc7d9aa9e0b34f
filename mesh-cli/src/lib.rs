//! `meshctl`, the command line of the mesh. Commands are thin: the logic they
//! present lives in the library crates.

pub mod admin_client;
pub mod analyze;
pub mod cluster;
#[cfg(test)]
mod example_readmes;
pub mod explain;
pub mod header_arg;
pub mod logs;
pub mod markdown;
pub mod proxy_config;
pub mod proxy_status;
pub mod up;
pub mod wait;
