//! What the integration tests share: real in-process clusters and scripted fake nodes.

#![allow(dead_code)] // each test binary uses part of it

pub mod cluster;
pub mod fake;
