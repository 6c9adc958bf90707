//! The mappers kubeedge-rs ships, each a [`ke_mapper::Driver`] and a binary:
//! `modbus-mapper` ([`modbus`], Modbus TCP) and `virtual-mapper` ([`virtual_device`], for demos
//! and tests). [`cli`] is what both binaries share.

pub mod cli;
pub mod modbus;
pub mod virtual_device;
