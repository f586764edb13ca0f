//! The launcher loop: poll → plan → reserve → intent → create_vm → watch → delete_vm, and recovery on start.
//!
//! One thread owns all state ([`Daemon`]: the ledger, one record per pool, the jobs and records in flight);
//! CPI calls run on short-lived worker threads that report back through a channel, so slow creates never
//! stall polling. Every create is preceded by an fsync'd ledger entry, and every VM is deleted when its job
//! ends, is cancelled, never starts, or the VM passes its deadline. On start, [`Daemon::recover`] settles
//! every open record before any new work. The CI system is reached only through
//! [`crate::launcher::source::Source`].
//!
//! The rooms, each using only those listed before it:
//! - [`pools`]: one record per pool (config, planner info, CPI, stemcell, breaker, host power);
//! - [`state`]: the [`Daemon`] record and what every phase uses (CPI calls, source errors, closing a record);
//! - [`vm`]: create_vm and delete_vm of a record's VM and their outcomes; [`stemcells`]: each pool's
//!   stemcell; [`gauges`]: `/metrics` gauges and `pools.json`;
//! - [`breakers`]: the probes of open breakers; [`power`]: host power;
//! - [`start`]: the plan carried out, warm VMs, failover;
//! - [`recover`]: recovery on start; [`settle`]: the open records, once per poll;
//! - [`poll`]: one poll; [`run`]: start, the loop, and the workers' messages.
mod breakers;
mod gauges;
mod poll;
mod pools;
mod power;
mod recover;
mod run;
mod settle;
mod start;
mod state;
mod stemcells;
mod vm;

pub use gauges::POOLS_FILE;
pub use poll::poll_backoff;
pub use state::{agent_name, random_hex, Daemon, DaemonError};
pub use stemcells::stemcell_api_version;
pub use vm::{create_backoff, create_vm_args};
