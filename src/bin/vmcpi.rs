//! `vmcpi`: one CPI method per invocation, a JSON request on stdin, a JSON response on stdout.
use clap::Parser;
use std::io::{Read, Write};
use std::path::PathBuf;

const AFTER_HELP: &str = "\
HOW IT IS CALLED
  bosh create-env and the BOSH director run the CPI once per method, write one JSON request to its
  stdin and read one JSON response from its stdout. Logs go to stderr (and into the response's `log`).
  The exit status is 0 whenever a response was written, including error responses.

EXAMPLES
  echo '{\"method\":\"info\",\"arguments\":[]}' | vmcpi --config cpi.json
  jq -n '{method:\"create_disk\", arguments:[1024, {}, null], context:{}, api_version:2}' \\
    | vmcpi --config cpi.json | jq -r .result

CONFIG
  A JSON file with a `driver` section tagged by `kind` (libvirt, vsphere or vmrun) and the `agent` section every BOSH CPI
  has; see examples/ in the source tree and the README's config reference.

METHODS (CPI API v1 and v2)
  info create_stemcell delete_stemcell create_vm delete_vm has_vm reboot_vm set_vm_metadata
  set_disk_metadata calculate_vm_cloud_properties create_disk delete_disk resize_disk update_disk
  has_disk attach_disk detach_disk get_disks snapshot_disk delete_snapshot";

/// A BOSH CPI for libvirt/QEMU, vSphere and VMware Workstation/Fusion/Player (the `driver.kind` of cpi.json).
#[derive(Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Path of cpi.json (also read from VMCPI_CONFIG).
    #[arg(long, short = 'c', env = "VMCPI_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() {
    vmcpi::timing::mark("start");
    let cli = Cli::parse();
    // default panic output could print data from the request: route panics through the redacting logger
    std::panic::set_hook(Box::new(|info| {
        vmcpi::logger::log_panic(&format!("panic: {info}"));
    }));
    // requests are small: one past the cap is read (the pages of the reserved buffer that no byte reached
    // cost no memory), and a request over the cap is refused rather than read on
    let cap = vmcpi::rpc::wire::MAX_REQUEST_BYTES;
    let mut input = Vec::with_capacity(cap + 1);
    let response = match std::io::stdin().take(cap as u64 + 1).read_to_end(&mut input) {
        Err(e) => {
            let mut r = vmcpi::rpc::wire::Response::err(
                vmcpi::rpc::dispatch::CPI_ERROR,
                format!("cannot read the request from stdin: {e}"),
                false,
            );
            r.log = vmcpi::logger::take_buffer();
            r
        }
        // handle refuses a request over the cap (WireError::TooLarge) without parsing it
        Ok(_) => {
            vmcpi::timing::mark("request read");
            vmcpi::rpc::handle(&input, cli.config.as_deref())
        }
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{}", response.to_json()).and_then(|_| out.flush()) {
        // the caller is gone (it closed stdout, or it was killed): it will never learn the CID of what this
        // call made, so nobody would ever delete it. Undo it here, then fail.
        if let Some(undo) = vmcpi::rpc::dispatch::undo_request(&input, &response) {
            vmcpi::warn!("cannot write the response ({e}): undoing the create nobody will hear of");
            let undone = vmcpi::rpc::handle(&undo, cli.config.as_deref());
            if let Some(err) = undone.error {
                vmcpi::warn!("the undo failed: {}: {}", err.kind, err.message);
            }
        }
        std::process::exit(1);
    }
}
