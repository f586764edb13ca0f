//! All integration tests build into one binary (ripgrep's layout); each module says what it covers.
//! They run the built executables exactly as BOSH does: a JSON request on stdin, a JSON response on stdout.

// The test harness: running the CPI binary, temporary configs, peer checks.
mod util;
// The test peers behind one trait (libvirtd, the vSphere simulator, the VMware double): config, stemcell, leftovers.
mod peer;
// Suites written once and run on every peer: every method, SIGKILL, hostile input, secret canaries, processes at once.
mod suites;
// The wire protocol through the real binary: bad input, unknown methods, panics, exit status, secrets.
mod rpc_contract;
// What a request's context may set (where to connect and as whom) and what it may not (programs, paths, TLS).
mod context;
// The state directory: refused when others could change it; the reaper acts only on its own names, follows no link.
mod state_dir;
// Secrets: typed, scrubbed from outside text however short, never masking vmcpi's own words.
mod redaction;
// The libvirt driver against the real libvirt daemon.
mod libvirt;
// A real guest booted from a VM made by create_vm reads its settings medium.
mod guest;
// QEMU user-mode port forwards (network cloud_properties port_forwards).
mod portfwd;
// qemu+ssh:// against OpenSSH on loopback, host key pinned.
mod remote;
// The libvirt RPC client (no virsh) over the unix socket, SSH and TLS, and against a scripted peer.
mod libvirt_rpc;
// Byte-stable settings media (golden images).
mod medium;
// spec/ as the contract: one request and response shape per method.
mod spec_contract;
// The BOSH release: job templates rendered with Ruby, the package's packaging script, bin/cpi as create-env runs it.
mod release;
// The vSphere simulator as a test peer: start/stop, stemcell images (also used by benches/vsphere.rs).
mod vsphere_sim;
// The vSphere driver against the simulator: faults, TLS, the kept session and inventory.
mod vsphere;
// Golden tests of every vSphere SOAP message (tests/fixtures/vsphere), no server needed.
mod vsphere_golden;
// spec/ replayed against the vSphere driver on the simulator.
mod vsphere_spec;
// The vSphere bootstrap (guest operations) and NFC uploads to another host, against a scripted SOAP server.
mod vsphere_fake;
// Hostile vSphere servers (stalls, drips, silence, endless pages, deep and huge replies): bounded BOSH errors.
mod vsphere_hostile;
// agent-launcher: the built binary against a fake Buildkite, a scriptable fake CPI, and vmcpi on libvirt.
mod launcher;
// The vmrun driver (VMware Workstation/Fusion/Player) against the VMware test double, locally and over SSH.
mod vmrun;
