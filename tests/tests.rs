//! All integration tests build into one binary (ripgrep's layout); each module says what it covers.
//! They run the built executables exactly as BOSH does: a JSON request on stdin, a JSON response on stdout.

// The test harness: running the CPI binary, temporary configs, peer checks.
mod util;
// The wire protocol through the real binary: bad input, unknown methods, panics, exit status, secrets.
mod rpc_contract;
// The libvirt driver against the real libvirt daemon.
mod libvirt;
// A real guest booted from a VM made by create_vm reads its settings medium.
mod guest;
// QEMU user-mode port forwards (network cloud_properties port_forwards).
mod portfwd;
// Secret canaries on every method and error path.
mod secrets;
// qemu+ssh:// against OpenSSH on loopback, host key pinned.
mod remote;
// SIGKILL at random points of creates: nothing is left after the clean-up.
mod faults;
// Hostile input on every method.
mod hostile;
// Byte-stable settings media (golden images).
mod medium;
// spec/ as the contract: one request and response shape per method.
mod spec_contract;
// The BOSH release: job templates rendered with Ruby, the package's packaging script, bin/cpi as create-env runs it.
mod release;
// The vSphere simulator as a test peer: start/stop, stemcell images (also used by benches/vsphere.rs).
mod vsphere_sim;
// The vSphere driver against the simulator (vCenter and ESXi models): every method, faults, TLS, parallel create_vm.
mod vsphere;
// Golden tests of every vSphere SOAP message (tests/fixtures/vsphere), no server needed.
mod vsphere_golden;
// spec/ replayed against the vSphere driver on the simulator.
mod vsphere_spec;
// The vSphere bootstrap (guest operations) and NFC uploads to another host, against a scripted SOAP server.
mod vsphere_fake;
// agent-launcher: the built binary against a fake Buildkite, a scriptable fake CPI, and vmcpi on libvirt.
mod launcher;
// The vmrun driver (VMware Workstation/Fusion/Player) against the VMware test double, locally and over SSH.
mod vmrun;
// Issue 6 proofs for vmrun on the VMware test double: SIGKILL, 16 processes, hostile input, secret canaries.
mod proof_vmrun;
// Issue 6 proofs for vSphere on the simulator: SIGKILL, 16 processes, hostile input, secret canaries.
mod proof_vsphere;
