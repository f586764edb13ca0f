//! set_vm_metadata: the VM name, its annotation and custom attributes.
use super::*;

impl Vsphere {
    pub(super) fn write_vm_metadata(&self, cid: &VmCid, metadata: &Metadata) -> DriverResult<()> {
        let inv = self.open()?;
        // the reference is all that is needed: no property read
        let vm = match inv.find_vm(&self.cfg.vm_folder, cid.as_str())? {
            Some(vm) => vm,
            None => {
                inv.dc()?;
                return Err(DriverError::vm_not_found(cid.to_string()));
            }
        };
        let cfm = inv.s.sc.custom_fields_manager.clone();
        let Some(cfm) = cfm.filter(|_| inv.vcenter()) else {
            // a standalone host has no custom attributes: the annotation (Notes) carries the metadata as
            // `key: value` lines, merged with what earlier calls wrote
            let old = inv
                .s
                .object(&vm, &["config.annotation"])
                .map_err(ctx_err(format!("cannot read the annotation of {cid}")))?;
            let mut merged: Metadata = old
                .and_then(|o| o.str("config.annotation").map(str::to_string))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            for (k, v) in metadata {
                merged.insert(k.replace(['\n', ':'], " "), v.replace('\n', " "));
            }
            let notes: String = merged.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            let spec = VmConfigSpec { annotation: Some(notes), ..Default::default() };
            inv.s
                .run_task(&ReconfigVm { this: vm.clone(), spec }, "set annotation")
                .map_err(ctx_err(format!("cannot set the annotation of {cid}")))?;
            return Ok(());
        };
        let read_fields = || -> DriverResult<Vec<(String, i32)>> {
            let oc = inv.s.object(&cfm, &["field"]).map_err(ctx_err("cannot read custom attribute definitions"))?;
            Ok(oc
                .and_then(|o| o.get("field").cloned())
                .map(|f| {
                    f.children
                        .iter()
                        .filter(|d| d.str_at("managedObjectType").is_none_or(|t| t == "VirtualMachine"))
                        .filter_map(|d| Some((d.str_at("name")?.to_string(), d.str_at("key")?.parse().ok()?)))
                        .collect()
                })
                .unwrap_or_default())
        };
        let mut fields = read_fields()?;
        for (k, v) in metadata {
            let key = match fields.iter().find(|(n, _)| n == k) {
                Some((_, key)) => *key,
                None => match inv.s.call(&AddCustomFieldDef { this: cfm.clone(), name: k.clone() }) {
                    Ok(n) => n
                        .str_at("returnval/key")
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| DriverError::other("AddCustomFieldDef returned no key"))?,
                    Err(e) if e.is_fault(&FaultKind::DuplicateName) => {
                        fields = read_fields()?;
                        fields.iter().find(|(n, _)| n == k).map(|(_, key)| *key).ok_or_else(|| {
                            DriverError::other(format!("custom attribute {k} exists but cannot be read"))
                        })?
                    }
                    Err(e) => return Err(DriverError::failed(format!("cannot define custom attribute {k}"), e)),
                },
            };
            inv.s
                .call(&SetField { this: cfm.clone(), entity: vm.clone(), key, value: v.clone() })
                .map_err(ctx_err(format!("cannot set custom attribute {k} on {cid}")))?;
        }
        Ok(())
    }
}
