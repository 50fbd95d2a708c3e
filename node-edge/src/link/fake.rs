//! [`FakeLink`]: an in-memory master behind [`MasterLink`], for tests without an HTTP server.
//!
//! It answers at once ([`MasterLink::blocks`] is false, so the drivers call it on the runtime's
//! thread and a paused tokio clock stays deterministic), records every call, and can be taken
//! down ([`FakeLink::set_down`]: every call answers 503), restarted with its registrations
//! forgotten ([`FakeLink::restart`]: the desired state answers 404 until the computer registers
//! again), or made to refuse registrations ([`FakeLink::refuse_registration`]).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use slapos_client::ClientError;
use slapos_proto::{DesiredState, RegisterComputer, UsageAck, UsageBatch, UsageSample};

use super::{MasterLink, Outgoing};

/// A call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeCall {
    /// `register`.
    Register,
    /// `desired(etag, wait)`.
    Desired {
        /// The etag sent.
        etag: Option<String>,
        /// The hold asked for.
        wait: Option<Duration>,
    },
    /// `send` (what was sent is in [`FakeLink::sent`]).
    Send,
    /// `post_usage` with this many samples.
    Usage(usize),
}

/// What the fake master holds.
#[derive(Debug, Default)]
struct State {
    down: bool,
    refuse: bool,
    registered: bool,
    desired: Option<DesiredState>,
    registrations: Vec<RegisterComputer>,
    calls: Vec<FakeCall>,
    sent: Vec<Outgoing>,
    usage: Vec<UsageSample>,
}

/// An in-memory master (see the module doc).
#[derive(Debug, Default)]
pub struct FakeLink {
    state: Mutex<State>,
    poll_step: Option<Duration>,
}

fn error(method: &'static str, status: u16, kind: &str) -> ClientError {
    ClientError::Api {
        method,
        url: "fake://master".into(),
        status,
        kind: kind.into(),
        message: format!("fake master: {kind}"),
    }
}

impl FakeLink {
    /// An empty master that is up.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, for a link that cannot hold requests (like SLAP): see
    /// [`MasterLink::poll_step`].
    pub fn with_poll_step(step: Duration) -> Self {
        Self {
            poll_step: Some(step),
            ..Self::default()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set the desired state (served once the computer is registered).
    pub fn set_desired(&self, d: DesiredState) {
        self.lock().desired = Some(d);
    }

    /// Take the master down (every call answers 503) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Refuse registrations (400) or accept them again.
    pub fn refuse_registration(&self, refuse: bool) {
        self.lock().refuse = refuse;
    }

    /// A master restarted on an empty database: it forgets the computer's registration.
    pub fn restart(&self) {
        self.lock().registered = false;
    }

    /// Every registration received.
    pub fn registrations(&self) -> Vec<RegisterComputer> {
        self.lock().registrations.clone()
    }

    /// Every call received, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.lock().calls.clone()
    }

    /// Every usage sample stored, once per (partition, start_ms) like the master.
    pub fn usage(&self) -> Vec<UsageSample> {
        self.lock().usage.clone()
    }

    /// Every message delivered, in order.
    pub fn sent(&self) -> Vec<Outgoing> {
        self.lock().sent.clone()
    }
}

impl MasterLink for FakeLink {
    fn register(&self, reg: &RegisterComputer) -> Result<(), ClientError> {
        let mut s = self.lock();
        s.calls.push(FakeCall::Register);
        if s.down {
            return Err(error("POST", 503, "down"));
        }
        if s.refuse {
            return Err(error("POST", 400, "refused"));
        }
        s.registered = true;
        s.registrations.push(reg.clone());
        Ok(())
    }

    fn desired(
        &self,
        etag: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Option<DesiredState>, ClientError> {
        let mut s = self.lock();
        s.calls.push(FakeCall::Desired {
            etag: etag.map(str::to_owned),
            wait,
        });
        if s.down {
            return Err(error("GET", 503, "down"));
        }
        if !s.registered {
            return Err(error("GET", 404, "not_found"));
        }
        match &s.desired {
            Some(d) if etag != Some(d.etag.as_str()) => Ok(Some(d.clone())),
            _ => Ok(None),
        }
    }

    fn send(&self, item: &Outgoing) -> Result<(), ClientError> {
        let mut s = self.lock();
        s.calls.push(FakeCall::Send);
        if s.down {
            return Err(error("POST", 503, "down"));
        }
        s.sent.push(item.clone());
        Ok(())
    }

    fn post_usage(&self, batch: &UsageBatch) -> Result<Option<UsageAck>, ClientError> {
        let mut s = self.lock();
        s.calls.push(FakeCall::Usage(batch.samples.len()));
        if s.down {
            return Err(error("POST", 503, "down"));
        }
        let mut ack = UsageAck {
            stored: 0,
            duplicates: 0,
        };
        for x in &batch.samples {
            let seen = s
                .usage
                .iter()
                .any(|u| u.partition == x.partition && u.start_ms == x.start_ms);
            if seen {
                ack.duplicates += 1;
            } else {
                ack.stored += 1;
                s.usage.push(x.clone());
            }
        }
        Ok(Some(ack))
    }

    fn poll_step(&self) -> Option<Duration> {
        self.poll_step
    }

    fn blocks(&self) -> bool {
        false
    }
}
