//! What the three drivers share about VM `cloud_properties`: the size keys (`cpu`, `ram`, `disk`) with one set
//! of defaults, one check against the hypervisor's [`Limits`], and one `calculate_vm_cloud_properties`.
//! Each driver declares its VM properties with [`vm_props!`]: these keys and `bootstrap`, then its extras
//! (datastores, kernel, …) in its own `props.rs`.
use crate::cpi::driver::VmResources;
use crate::cpi::error::{DriverError, DriverResult};
use serde_json::{json, Value};

/// The default `cpu`: one vCPU.
pub fn default_cpu() -> u32 {
    1
}

/// The default `ram`: 1 GiB, in MiB.
pub fn default_ram() -> u64 {
    1024
}

/// Declares a driver's VM `cloud_properties` struct: the keys every driver reads (`cpu`, `ram`, `disk` with
/// the shared defaults, and the optional `bootstrap` block) followed by the driver's own fields. One flat
/// struct rather than a `#[serde(flatten)]`ed part: serde's `deny_unknown_fields` does not work with
/// `flatten`, and a typo must be refused with every accepted key named.
macro_rules! vm_props {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct $name {
            /// vCPUs.
            #[serde(default = "crate::cpi::driver::props::default_cpu")]
            pub(super) cpu: u32,
            /// RAM in MiB.
            #[serde(default = "crate::cpi::driver::props::default_ram")]
            pub(super) ram: u64,
            /// Ephemeral disk in MiB (0: none; the agent then partitions the root disk).
            #[serde(default)]
            pub(super) disk: u64,
            $($(#[$fmeta])* pub(super) $field: $ty,)*
            /// Script run in the guest after boot ([`crate::cpi::driver::bootstrap`]).
            #[serde(default)]
            pub(super) bootstrap: Option<crate::cpi::driver::bootstrap::Bootstrap>,
        }
    };
}
pub(crate) use vm_props;

/// Reads `cloud_properties` (of a VM, disk or network: `what` names them in the error) into a driver's
/// struct; a typo or a wrong type is an [`DriverError::invalid`] request.
pub fn parse<T: serde::de::DeserializeOwned>(what: &str, m: &serde_json::Map<String, Value>) -> DriverResult<T> {
    // serde quotes the value it refuses: outside text
    serde_json::from_value(Value::Object(m.clone()))
        .map_err(|e| DriverError::invalid(what, crate::common::logger::redact(&e.to_string())))
}

/// A hypervisor's limits on a VM's size.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_cpus: u32,
    pub min_ram_mib: u64,
    pub max_ram_mib: u64,
    /// The RAM size must be a multiple of this (VMware's `memsize`: 4 MiB; 1 where anything goes).
    pub ram_step_mib: u64,
    /// The largest ephemeral disk, MiB.
    pub max_disk_mib: u64,
    /// The limits in words, for messages (`"128 GiB"`).
    pub max_ram_text: &'static str,
    pub max_disk_text: &'static str,
}

impl Limits {
    /// Checks `cpu`, `ram` and `disk` from VM cloud_properties (before anything is made).
    pub fn check(&self, cpu: u32, ram: u64, disk: u64) -> DriverResult<()> {
        let what = "VM cloud_properties";
        if cpu == 0 || cpu > self.max_cpus {
            return Err(DriverError::invalid(what, format!("cpu must be 1 to {}, got {cpu}", self.max_cpus)));
        }
        if ram < self.min_ram_mib || ram > self.max_ram_mib || !ram.is_multiple_of(self.ram_step_mib) {
            let step = if self.ram_step_mib > 1 {
                format!(" and a multiple of {} MiB", self.ram_step_mib)
            } else {
                String::new()
            };
            return Err(DriverError::invalid(
                what,
                format!("ram must be {} MiB to {}{step}, got {ram}", self.min_ram_mib, self.max_ram_text),
            ));
        }
        if disk > self.max_disk_mib {
            return Err(DriverError::invalid(
                what,
                format!("disk is limited to {}, got {disk} MiB", self.max_disk_text),
            ));
        }
        Ok(())
    }

    /// `calculate_vm_cloud_properties`: the director's sizes as this driver's cloud_properties, RAM rounded up to
    /// the step, refused when the hypervisor cannot run it (the same check create_vm makes).
    pub fn calculate(&self, res: &VmResources) -> DriverResult<Value> {
        let what = "vm_resources";
        if res.cpu == 0 || res.ram == 0 {
            return Err(DriverError::invalid(what, "cpu and ram must be positive"));
        }
        let cpu = u32::try_from(res.cpu).ok().filter(|c| *c <= self.max_cpus).ok_or_else(|| {
            DriverError::invalid(what, format!("cpu must be at most {}, got {}", self.max_cpus, res.cpu))
        })?;
        let ram = res
            .ram
            .max(self.min_ram_mib)
            .checked_next_multiple_of(self.ram_step_mib)
            .filter(|r| *r <= self.max_ram_mib);
        let ram = ram.ok_or_else(|| {
            DriverError::invalid(what, format!("ram must be at most {} MiB, got {}", self.max_ram_mib, res.ram))
        })?;
        if res.ephemeral_disk_size > self.max_disk_mib {
            return Err(DriverError::invalid(
                what,
                format!(
                    "ephemeral_disk_size is limited to {}, got {} MiB",
                    self.max_disk_text, res.ephemeral_disk_size
                ),
            ));
        }
        Ok(json!({"cpu": cpu, "ram": ram, "disk": res.ephemeral_disk_size}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpi::error::ErrorKind;

    /// A made-up hypervisor with a RAM step, so that rounding is seen.
    const L: Limits = Limits {
        max_cpus: 64,
        min_ram_mib: 8,
        max_ram_mib: 64 << 10,
        ram_step_mib: 8,
        max_disk_mib: 4 << 20,
        max_ram_text: "64 GiB",
        max_disk_text: "4 TiB",
    };

    fn res(cpu: u64, ram: u64, disk: u64) -> VmResources {
        VmResources { cpu, ram, ephemeral_disk_size: disk }
    }

    #[test]
    fn check_refuses_what_the_hypervisor_cannot_run() {
        assert!(L.check(1, 1024, 0).is_ok());
        for (cpu, ram, disk) in
            [(0, 1024, 0), (65, 1024, 0), (1, 0, 0), (1, 1023, 0), (1, u64::MAX, 0), (1, 1024, u64::MAX)]
        {
            let e = L.check(cpu, ram, disk).unwrap_err();
            assert_eq!((e.kind(), e.retryable()), (ErrorKind::Invalid, false), "{cpu} {ram} {disk}: {e}");
        }
    }

    #[test]
    fn calculate_rounds_and_validates() {
        assert_eq!(L.calculate(&res(2, 1023, 4096)).unwrap(), json!({"cpu": 2, "ram": 1024, "disk": 4096}));
        for r in [res(0, 1024, 0), res(1, 0, 0), res(1 << 40, 1024, 0), res(1, u64::MAX, 0), res(1, 1024, u64::MAX)] {
            assert_eq!(L.calculate(&r).unwrap_err().kind(), ErrorKind::Invalid, "{r:?}");
        }
        // what calculate answers, create_vm accepts
        let v = L.calculate(&res(3, 777, 100)).unwrap();
        L.check(v["cpu"].as_u64().unwrap() as u32, v["ram"].as_u64().unwrap(), v["disk"].as_u64().unwrap()).unwrap();
    }
}
