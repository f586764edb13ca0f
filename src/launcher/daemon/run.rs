//! The loop: start (ledger, listener, pools and their stemcells, the assignments of open records), recovery,
//! then polls and the messages of worker threads until SIGTERM (and, with `on_shutdown = "drain"`, until
//! every VM is gone); and the listener kept alive.
use super::pools::Pools;
use super::power::host_at_start;
use super::state::{Daemon, DaemonError, Msg};
use crate::launcher::config::{Config, OnShutdown};
use crate::launcher::http::{self, Shared, SharedRef};
use crate::launcher::ledger::Ledger;
use crate::launcher::log;
use crate::launcher::source::Source;
use crate::launcher::tracked::Tracked;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The state the listener shares with the loop, before the first poll.
fn shared_state(cfg: &Config) -> SharedRef {
    Arc::new(std::sync::Mutex::new(Shared {
        metrics: Default::default(),
        assignments: HashMap::new(),
        last_tick: Instant::now(),
        healthy_within: Duration::from_millis(cfg.poll_interval_ms * 5 + 60_000),
        failed_polls: 0,
        unhealthy_after: cfg.unhealthy_after_failed_polls,
        listener_down: None,
    }))
}

impl Daemon {
    /// Opens the ledger, binds the listener, finds each pool's host power and makes sure every pool has its
    /// stemcell; the VMs of open records get their assignments back.
    pub fn new(cfg: Config, source: Box<dyn Source>, stop: Arc<AtomicBool>) -> Result<Daemon, DaemonError> {
        let ledger = Ledger::open(&cfg.ledger_dir)?;
        let shared = shared_state(&cfg);
        let listener = http::serve(&cfg.listen, cfg.tls.as_ref(), cfg.listener.limits(), shared.clone())
            .map_err(|source| DaemonError::Listen { addr: cfg.listen.clone(), source })?;
        log::info(&format!(
            "listening on {}://{} (/metrics, /healthz, /v1/assignment)",
            if cfg.tls.is_some() { "https" } else { "http" },
            listener.addr()
        ));
        let pools = Pools::new(&cfg, ledger.spool_dir(), |cpi, pool| host_at_start(&cfg, &shared, cpi, pool));
        let (tx, rx) = channel();
        let mut d = Daemon {
            cfg,
            pools,
            ledger,
            source,
            shared,
            tx,
            rx,
            tracked: Tracked::default(),
            stop,
            source_wait_until: None,
            failed_polls: 0,
            published: String::new(),
            listener,
            listener_retry_at: None,
        };
        for r in d.ledger.state.open.values().cloned().collect::<Vec<_>>() {
            log::add_secret(&r.intent.secret);
            d.publish_assignment(&r.intent);
        }
        d.ensure_stemcells()?;
        Ok(d)
    }

    /// The main loop, until SIGTERM (and, with `on_shutdown = "drain"`, until every VM is gone).
    pub fn run(&mut self) -> Result<(), DaemonError> {
        self.source.register().map_err(DaemonError::Register)?;
        log::info(&format!("{} registered", self.source.describe()));
        self.recover()?;
        let interval = Duration::from_millis(self.cfg.poll_interval_ms);
        let mut next_poll = Instant::now();
        let mut stopping_logged = false;
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if stopping && !stopping_logged {
                log::info(&format!("SIGTERM: taking no new work; on_shutdown = {:?}", self.cfg.on_shutdown));
                stopping_logged = true;
            }
            if stopping && self.tracked.busy().next().is_none() {
                let drained = self.ledger.state.open.values().all(|r| r.cid.is_none());
                if self.cfg.on_shutdown == OnShutdown::Leave || drained {
                    break;
                }
            }
            self.watch_listener();
            let wait = next_poll.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
            if let Ok(msg) = self.rx.recv_timeout(wait) {
                self.handle(msg)?;
                while let Ok(m) = self.rx.try_recv() {
                    self.handle(m)?;
                }
            }
            if Instant::now() >= next_poll {
                let t = Instant::now();
                self.poll(stopping)?;
                next_poll = Instant::now() + interval;
                let mut s = http::lock(&self.shared);
                s.last_tick = Instant::now();
                s.metrics.observe("launcher_poll_duration_seconds", &[], t.elapsed().as_secs_f64());
            }
        }
        match self.source.deregister() {
            Ok(()) => log::info(&format!("{} deregistered", self.source.describe())),
            Err(e) => log::warn(&format!("deregister failed: {}", log::chain(&e))),
        }
        Ok(())
    }

    /// What a worker thread reported.
    fn handle(&mut self, msg: Msg) -> Result<(), DaemonError> {
        match msg {
            Msg::Probed { pool, res } => self.probed(pool, res),
            Msg::PowerDone { pool, on, res } => {
                self.power_done(pool, on, res);
                Ok(())
            }
            Msg::WakeProbed { pool, ok } => self.wake_probed(pool, ok),
            Msg::Created { id, n, res } => self.created(id, n, res),
            Msg::Deleted { id, res } => self.deleted(id, res),
        }
    }

    /// Starts a new listener when the thread of the old one has ended (a bug: its accept loop restarts
    /// itself); until then `/healthz` has nobody to answer it, and the log says why every 5 s.
    fn watch_listener(&mut self) {
        if !self.listener.is_finished() || self.listener_retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let (listen, tls) = (&self.cfg.listen, self.cfg.tls.as_ref());
        match http::serve(listen, tls, self.cfg.listener.limits(), self.shared.clone()) {
            Ok(l) => {
                log::error(&format!("the HTTP listener's thread had ended: a new one listens on {}", l.addr()));
                http::lock(&self.shared).listener_down = None;
                self.listener = l;
                self.listener_retry_at = None;
            }
            Err(e) => {
                log::error(&format!(
                    "the HTTP listener's thread has ended and a new one cannot start: {}; trying again in 5 s",
                    log::chain(&e)
                ));
                self.listener_retry_at = Some(Instant::now() + Duration::from_secs(5));
            }
        }
        http::lock(&self.shared).metrics.inc("launcher_listener_failures_total", &[], 1.0);
    }
}
