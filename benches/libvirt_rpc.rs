//! The libvirt RPC client against `virsh`, on the same daemon: what one connection costs and what one call
//! costs, the figures the driver's move from virsh to the client rests on. Prints medians; not a timed test.
//! Run: `cargo bench --bench libvirt_rpc` (root, libvirtd from `tools/libvirt-up.sh`). Over TLS too when
//! the daemon listens on 127.0.0.1:16514 (the test PKI of libvirt-up.sh), over SSH when the test sshd of
//! tests/libvirt_rpc.rs runs (`tools/sshd-up.sh /tmp/vmcpi-test-sshd-22283 22283`).
//!
//! - connect + open: `Client::connect` + `close` against `virsh -c URI uri` (a process, its connection and
//!   one call);
//! - one domain lookup (+ state) on an open connection against `virsh domstate` (a process per command, as
//!   the driver runs it today);
//! - a whole CPI-call-like sequence: connect, lookup, state, close.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vmcpi::libvirt_rpc::{flags, Client};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn virsh(uri: &str, args: &[&str]) -> bool {
    Command::new("virsh").arg("-c").arg(uri).args(args).output().is_ok_and(|o| o.status.success())
}

fn row(what: &str, client: Duration, virsh: Option<Duration>) {
    match virsh {
        Some(v) => println!(
            "{what:<44} {:>10}   virsh {:>10}   ({:.0}x)",
            ms(client),
            ms(v),
            v.as_secs_f64() / client.as_secs_f64().max(1e-9)
        ),
        None => println!("{what:<44} {:>10}   virsh {:>10}", ms(client), "n/a"),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let local = "qemu:///system";
    let c = match Client::connect(local) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("no libvirt daemon ({e}); run tools/libvirt-up.sh");
            std::process::exit(1);
        }
    };
    let has_virsh = virsh(local, &["uri"]);
    // a defined, stopped, guest-less domain to look up
    let dom_name = format!("vmcpi-rpc-bench-{}", std::process::id());
    let xml = format!(
        "<domain type='qemu'><name>{dom_name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
    );
    let dom = c.domain_define_xml(&xml, 0).expect("define the bench domain");
    println!(
        "libvirt RPC client against virsh (medians; libvirt {}, one process per virsh command)",
        c.lib_version().unwrap()
    );

    let n = 30;
    let connect = time(n, || Client::connect(local).unwrap().close().unwrap());
    let v_connect = has_virsh.then(|| time(n, || virsh(local, &["uri"])));
    row("connect + open (unix socket)", connect, v_connect);

    let lookup = time(1000, || c.domain_lookup(&dom_name).unwrap());
    let v_state = has_virsh.then(|| time(n, || virsh(local, &["domstate", &dom_name])));
    row("domain lookup (open connection)", lookup, None);
    let state = time(1000, || {
        let d = c.domain_lookup(&dom_name).unwrap();
        c.domain_state(&d).unwrap()
    });
    row("domain lookup + state (open connection)", state, v_state);
    let whole = time(n, || {
        let c = Client::connect(local).unwrap();
        let d = c.domain_lookup(&dom_name).unwrap();
        let s = c.domain_state(&d).unwrap();
        c.close().unwrap();
        s
    });
    row("connect + lookup + state + close", whole, v_state);
    let xml_desc = time(500, || c.domain_xml(&dom, 0).unwrap());
    let v_dumpxml = has_virsh.then(|| time(n, || virsh(local, &["dumpxml", &dom_name])));
    row("domain XML (open connection)", xml_desc, v_dumpxml);

    // TLS on loopback (libvirt-up.sh's test PKI)
    let state_dir =
        PathBuf::from(std::env::var("LIBVIRT_UP_STATE").unwrap_or_else(|_| "/var/tmp/cpi-testinfra/libvirt".into()));
    let pki = state_dir.join("pki/client");
    let tls = format!("qemu+tls://127.0.0.1/system?pkipath={}", pki.display());
    if Client::connect(&tls).is_ok() {
        let t = time(n, || Client::connect(&tls).unwrap().close().unwrap());
        let v = (has_virsh && virsh(&tls, &["uri"])).then(|| time(n, || virsh(&tls, &["uri"])));
        row("connect + open (TLS, 127.0.0.1)", t, v);
    } else {
        println!("(no TLS listener on 127.0.0.1:16514: TLS skipped)");
    }
    // SSH to the loopback sshd of the tests
    let dir = Path::new("/tmp/vmcpi-test-sshd-22283");
    let ssh = format!(
        "qemu+ssh://root@127.0.0.1:22283/system?keyfile={}&known_hosts={}",
        dir.join("id_ed25519").display(),
        dir.join("known_hosts").display()
    );
    if dir.exists() && Client::connect(&ssh).is_ok() {
        let t = time(10, || Client::connect(&ssh).unwrap().close().unwrap());
        let cmd = format!("qemu+ssh://root@127.0.0.1:22283/system?command={}", dir.join("ssh").display());
        let v = (has_virsh && virsh(&cmd, &["uri"])).then(|| time(10, || virsh(&cmd, &["uri"])));
        row("connect + open (SSH, 127.0.0.1)", t, v);
    } else {
        println!("(no test sshd on 127.0.0.1:22283: SSH skipped)");
    }

    c.domain_undefine(&dom, flags::UNDEFINE_NVRAM).expect("undefine the bench domain");
    c.close().unwrap();
}
