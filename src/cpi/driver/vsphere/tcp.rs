//! The TCP layer under every vSphere request: ureq's own TCP transport sets the socket's write timeout to
//! the time left and then writes a buffer with `write_all`, which restarts that timeout after every partial
//! write. A server that takes a few bytes at a time (or a kernel still growing its socket buffers for a
//! server that reads nothing) keeps one buffer's write going for a timeout per piece, far past
//! `http_timeout_seconds`. Here each buffer's writes share one deadline, so a write ends when the time left
//! for the request does, however the server takes the bytes.
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, ShutdownHandle, Transport,
};

/// Opens TCP connections whose writes keep the request's deadline (replaces ureq's `TcpConnector`).
#[derive(Debug, Default)]
pub struct DeadlineTcp;

impl<In: Transport> Connector<In> for DeadlineTcp {
    type Out = Either<In, DeadlineTransport>;

    fn connect(&self, details: &ConnectionDetails, chained: Option<In>) -> Result<Option<Self::Out>, ureq::Error> {
        if let Some(chained) = chained {
            return Ok(Some(Either::A(chained)));
        }
        let budget = details.timeout.not_zero().map(|d| *d);
        let deadline = budget.map(|d| Instant::now() + d);
        let mut last: Option<std::io::Error> = None;
        for addr in details.addrs.iter() {
            let attempt = match deadline {
                Some(end) => {
                    let left = end.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(ureq::Error::Timeout(details.timeout.reason));
                    }
                    TcpStream::connect_timeout(addr, left)
                }
                None => TcpStream::connect(addr),
            };
            match attempt {
                Ok(stream) => {
                    if details.config.no_delay() {
                        stream.set_nodelay(true)?;
                    }
                    let stream = Arc::new(stream);
                    (details.register_shutdown)(Arc::downgrade(&stream) as std::sync::Weak<dyn ShutdownHandle>)?;
                    let buffers =
                        LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
                    return Ok(Some(Either::B(DeadlineTransport { stream, buffers })));
                }
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    return Err(ureq::Error::Timeout(details.timeout.reason));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| std::io::Error::new(ErrorKind::ConnectionRefused, "no address to connect to"))
            .into())
    }
}

/// A TCP connection whose every transmission ends by the request's deadline.
#[derive(Debug)]
pub struct DeadlineTransport {
    /// Shared with the agent's shutdown handle.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock)
}

impl Transport for DeadlineTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let deadline = timeout.not_zero().map(|d| Instant::now() + *d);
        let mut output = &self.buffers.output()[..amount];
        let mut stream = &*self.stream;
        while !output.is_empty() {
            let left = match deadline {
                Some(end) => match end.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                    Some(d) => Some(d),
                    None => return Err(ureq::Error::Timeout(timeout.reason)),
                },
                None => None,
            };
            stream.set_write_timeout(left)?;
            match stream.write(output) {
                Ok(0) => return Err(std::io::Error::from(ErrorKind::WriteZero).into()),
                Ok(n) => output = &output[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => return Err(ureq::Error::Timeout(timeout.reason)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let deadline = timeout.not_zero().map(|d| Instant::now() + *d);
        let mut stream = &*self.stream;
        loop {
            let left = deadline.map(|end| end.saturating_duration_since(Instant::now()));
            if left.is_some_and(|d| d.is_zero()) {
                return Err(ureq::Error::Timeout(timeout.reason));
            }
            stream.set_read_timeout(left)?;
            let input = self.buffers.input_append_buf();
            match stream.read(input) {
                Ok(n) => {
                    self.buffers.input_appended(n);
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => return Err(ureq::Error::Timeout(timeout.reason)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn is_open(&mut self) -> bool {
        // a pooled connection is reused only when the server has neither closed it nor sent anything unasked
        let stream = &*self.stream;
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let open = matches!((&*stream).read(&mut byte), Err(ref e) if e.kind() == ErrorKind::WouldBlock);
        open && stream.set_nonblocking(false).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    fn put_to_a_server_that_reads_nothing<C: Connector<(), Out = impl Transport> + 'static>(connector: C) -> Duration {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let hold = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let _ = rx.recv_timeout(Duration::from_secs(20));
            drop(s);
        });
        let agent: ureq::Agent = ureq::Agent::with_parts(
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(1))).build(),
            connector,
            ureq::unversioned::resolver::DefaultResolver::default(),
        );
        let started = Instant::now();
        let err = agent.put(&format!("http://{addr}/x")).send(&vec![7u8; 64 << 20][..]).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, ureq::Error::Timeout(_)), "{err}");
        drop(tx);
        hold.join().unwrap();
        took
    }

    /// A server that reads nothing: the body's writes end when the request's one second is up. (The
    /// overrun itself, a 64 MiB datastore PUT through a proxy that goes silent taking 3 timeouts with ureq's
    /// TCP layer, is reproduced by tests/vsphere_hostile.rs `put silent`.)
    #[test]
    fn a_body_the_server_never_reads_ends_at_the_deadline() {
        let took = put_to_a_server_that_reads_nothing(DeadlineTcp);
        assert!(took < Duration::from_millis(1500), "took {took:?}");
    }
}
