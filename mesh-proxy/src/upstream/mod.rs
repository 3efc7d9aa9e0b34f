//! Upstream side: cluster runtime state, load balancing, request hashing
//! and connection pools.

pub mod circuit_breaker;
pub mod cluster;
pub mod hash;
pub mod lb;
pub mod outlier;
pub mod pool;
