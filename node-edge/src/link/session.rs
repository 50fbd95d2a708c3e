//! The node↔master session as a state machine (pure: no socket, no clock read, no sleep).
//!
//! The [`poller`](super::poller) asks [`Session::next`] what to do, does it (a registration, a
//! desired-state fetch, or a sleep) and feeds the outcome back through [`Session::on_answer`],
//! which returns the [`Event`]s the driver acts on (publish the link state, write the cache,
//! hand a new desired state to the node, log). The split is rumqttc's `state.rs` /
//! `eventloop.rs` (`/work/shared/STYLE.md`, pattern 1).
//!
//! The rules the session owns:
//!
//! * **Registration first**, again after the master answers 404 for the desired state (it
//!   forgot the computer: a recreated master database), at once.
//! * **Backoff** ([`Backoff`], from [`FIRST_RETRY`] up to `poll_interval`) after a failed call;
//!   any answer from the master resets it.
//! * **Etag**: the etag of the last state handed to the node (the cached one at start); a state
//!   with the same etag is not handed over again.
//! * **Long poll**: with a `long_poll` hold and a known etag, a fetch asks the master to hold
//!   the request. A master that answers "unchanged" faster than [`TOO_FAST`] does not hold
//!   requests: the session then waits `poll_interval` before the next fetch. Without a hold
//!   (no etag yet, `long_poll = 0`) it fetches every `poll_interval`.
//! * **Emulated long poll**: a link that cannot hold requests (SLAP: slapproxy has none) gives a
//!   `poll_step`; the session then fetches every `poll_step` until the state changes or the hold
//!   has passed, and applies the rule above to the whole round.
//! * **Link state**: [`LinkState::Online`] after any answer, [`LinkState::Offline`] after a call
//!   that did not reach the master (unreachable, or a 5xx); an [`Event::Link`] each change.

use std::time::Duration;

use slapos_client::ClientError;
use slapos_proto::DesiredState;
use tokio::time::Instant;

use crate::util::backoff::Backoff;

/// An "unchanged" answer to a held fetch faster than this means the master does not hold.
pub const TOO_FAST: Duration = Duration::from_millis(500);

/// The first retry delay after a failed call (doubling up to `poll_interval`).
pub const FIRST_RETRY: Duration = Duration::from_millis(500);

/// Link status the session publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// Not contacted yet.
    #[default]
    Unknown,
    /// Last call succeeded.
    Online,
    /// Last call failed to reach the master.
    Offline,
}

/// Session timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Long-poll hold time (zero: plain polling).
    pub long_poll: Duration,
    /// Fallback polling period and retry cap.
    pub poll_interval: Duration,
    /// `Some`: the link cannot hold a request; the session polls every `poll_step` for as long
    /// as a hold would last (see [`super::MasterLink::poll_step`]).
    pub poll_step: Option<Duration>,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Check the protocol and register the computer.
    Register,
    /// Fetch the desired state: `Ok(None)` is expected while `etag` is current after `wait`.
    Fetch {
        /// The etag of the state the node has.
        etag: Option<String>,
        /// How long the master should hold the request (`None`: answer at once).
        wait: Option<Duration>,
    },
    /// Sleep, then ask again.
    Sleep(Duration),
}

/// The outcome of a [`Step::Register`] or [`Step::Fetch`].
#[derive(Debug)]
pub enum Answer {
    /// The registration's result.
    Registered(Result<(), ClientError>),
    /// The fetch's result.
    Desired(Result<Option<DesiredState>, ClientError>),
    /// The call could not be made (its thread did not start): retried with backoff.
    Lost,
}

/// What the driver acts on after an answer.
#[derive(Debug)]
pub enum Event {
    /// The link state changed.
    Link(LinkState),
    /// The computer is registered.
    Registered,
    /// The master refused the registration (retried with backoff).
    RegistrationRefused(ClientError),
    /// The master does not know the computer (404): registering again.
    Forgotten(ClientError),
    /// A fetch failed with an answer of the master (retried with backoff).
    FetchFailed(ClientError),
    /// A new desired state: to cache and hand to the node.
    Desired(DesiredState),
}

/// The session: registration, etag, backoff, link state, and when to call next.
#[derive(Debug, Clone)]
pub struct Session {
    timing: Timing,
    registered: bool,
    etag: Option<String>,
    backoff: Backoff,
    link: LinkState,
    /// Set by an answer: how long to wait before the next call.
    pause: Option<Duration>,
    /// The end of the current wait.
    wake: Option<Instant>,
    /// Time spent so far in the current emulated hold (fetches and steps).
    round: Duration,
}

impl Session {
    /// A session that has not registered yet; `etag`: the one of the cached state, if any.
    pub fn new(timing: Timing, etag: Option<String>) -> Self {
        Self {
            timing,
            registered: false,
            etag,
            backoff: Backoff::new(FIRST_RETRY, timing.poll_interval),
            link: LinkState::Unknown,
            pause: None,
            wake: None,
            round: Duration::ZERO,
        }
    }

    /// The etag of the last state handed over.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The link state.
    pub fn link(&self) -> LinkState {
        self.link
    }

    /// True once registered (until the master forgets the computer).
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// True when a fetch asks for a hold: a hold is configured and the node has a state.
    fn held(&self) -> bool {
        !self.timing.long_poll.is_zero() && self.etag.is_some()
    }

    /// What to do at `now`. Calling it again before the wait is over returns the rest of it.
    pub fn next(&mut self, now: Instant) -> Step {
        if let Some(d) = self.pause.take() {
            self.wake = Some(now + d);
        }
        if let Some(w) = self.wake {
            if now < w {
                return Step::Sleep(w - now);
            }
            self.wake = None;
        }
        if !self.registered {
            return Step::Register;
        }
        let wait = match self.timing.poll_step {
            None if self.held() => Some(self.timing.long_poll),
            _ => None,
        };
        Step::Fetch {
            etag: self.etag.clone(),
            wait,
        }
    }

    /// Take the answer to the last [`Step`]; `elapsed`: how long the call took.
    pub fn on_answer(&mut self, answer: Answer, elapsed: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        match answer {
            Answer::Registered(Ok(())) => {
                events.push(Event::Registered);
                self.registered = true;
                self.set_link(LinkState::Online, &mut events);
                self.backoff.reset();
            }
            Answer::Registered(Err(e)) => {
                if e.is_unreachable() {
                    self.set_link(LinkState::Offline, &mut events);
                } else {
                    events.push(Event::RegistrationRefused(e));
                }
                self.retry();
            }
            Answer::Lost => self.retry(),
            Answer::Desired(Ok(Some(d))) => {
                self.set_link(LinkState::Online, &mut events);
                self.backoff.reset();
                if self.etag.as_deref() != Some(d.etag.as_str()) {
                    self.etag = Some(d.etag.clone());
                    self.round = Duration::ZERO;
                    events.push(Event::Desired(d));
                } else {
                    self.unchanged(elapsed);
                }
            }
            Answer::Desired(Ok(None)) => {
                self.set_link(LinkState::Online, &mut events);
                self.backoff.reset();
                self.unchanged(elapsed);
            }
            Answer::Desired(Err(e)) if e.status() == Some(404) => {
                events.push(Event::Forgotten(e));
                self.registered = false;
                self.round = Duration::ZERO;
            }
            Answer::Desired(Err(e)) => {
                if e.is_unreachable() {
                    self.set_link(LinkState::Offline, &mut events);
                } else {
                    events.push(Event::FetchFailed(e));
                }
                self.retry();
            }
        }
        events
    }

    fn retry(&mut self) {
        self.round = Duration::ZERO;
        self.pause = Some(self.backoff.fail());
    }

    /// The state did not change during a fetch that took `elapsed`.
    fn unchanged(&mut self, elapsed: Duration) {
        let interval = self.timing.poll_interval;
        if !self.held() {
            self.pause = Some(interval);
            return;
        }
        let spent = match self.timing.poll_step {
            // The master held the request itself.
            None => elapsed,
            // The session holds: poll again after a step while the hold lasts.
            Some(step) => {
                let spent = self.round + elapsed;
                if spent + step <= self.timing.long_poll {
                    self.round = spent + step;
                    self.pause = Some(step);
                    return;
                }
                self.round = Duration::ZERO;
                spent
            }
        };
        // A master that answers "unchanged" at once does not hold requests: poll slowly.
        if spent < TOO_FAST {
            self.pause = Some(interval);
        }
    }

    fn set_link(&mut self, s: LinkState, events: &mut Vec<Event>) {
        if self.link != s {
            self.link = s;
            events.push(Event::Link(s));
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use slapos_proto::ComputerId;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const S: fn(u64) -> Duration = Duration::from_secs;

    fn timing(poll_step: Option<Duration>) -> Timing {
        Timing {
            long_poll: S(5),
            poll_interval: S(4),
            poll_step,
        }
    }

    /// A desired state of `COMP-1` with `etag` (also used by the poller's tests).
    pub(in crate::link) fn state(etag: &str) -> DesiredState {
        DesiredState {
            computer: ComputerId::parse("COMP-1").unwrap(),
            etag: etag.into(),
            software: vec![],
            partitions: vec![],
        }
    }

    fn api(status: u16) -> ClientError {
        ClientError::Api {
            method: "GET",
            url: "http://master/v1".into(),
            status,
            kind: "test".into(),
            message: String::new(),
        }
    }

    fn fetch(etag: Option<&str>, wait: Option<Duration>) -> Step {
        Step::Fetch {
            etag: etag.map(str::to_owned),
            wait,
        }
    }

    fn kinds(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::Link(s) => format!("link {s:?}"),
                Event::Registered => "registered".into(),
                Event::RegistrationRefused(e) => format!("refused {:?}", e.status()),
                Event::Forgotten(_) => "forgotten".into(),
                Event::FetchFailed(e) => format!("failed {:?}", e.status()),
                Event::Desired(d) => format!("desired {}", d.etag),
            })
            .collect()
    }

    /// A registered session, with the state `etag` if given.
    fn online(t: Timing, etag: Option<&str>) -> (Session, Instant) {
        let now = Instant::now();
        let mut s = Session::new(t, etag.map(str::to_owned));
        assert_eq!(s.next(now), Step::Register);
        let ev = s.on_answer(Answer::Registered(Ok(())), MS(3));
        assert_eq!(kinds(&ev), ["registered", "link Online"]);
        (s, now)
    }

    #[test]
    fn registers_then_fetches_without_a_hold_until_it_has_a_state() {
        let (mut s, now) = online(timing(None), None);
        assert_eq!(s.next(now), fetch(None, None));
        let ev = s.on_answer(Answer::Desired(Ok(Some(state("1")))), MS(3));
        assert_eq!(kinds(&ev), ["desired 1"]);
        // Now held, at once.
        assert_eq!(s.next(now), fetch(Some("1"), Some(S(5))));
        // Held the whole time: fetch again at once.
        assert!(s.on_answer(Answer::Desired(Ok(None)), S(5)).is_empty());
        assert_eq!(s.next(now), fetch(Some("1"), Some(S(5))));
    }

    #[test]
    fn an_unchanged_answer_that_came_too_fast_waits_the_poll_interval() {
        let (mut s, now) = online(timing(None), Some("1"));
        assert_eq!(s.next(now), fetch(Some("1"), Some(S(5))));
        s.on_answer(Answer::Desired(Ok(None)), MS(10));
        assert_eq!(s.next(now), Step::Sleep(S(4)));
        // Asked again one second later: the rest of the wait.
        assert_eq!(s.next(now + S(1)), Step::Sleep(S(3)));
        assert_eq!(s.next(now + S(4)), fetch(Some("1"), Some(S(5))));
        // The same state again (a master that sends it whole): same rule, no event.
        let ev = s.on_answer(Answer::Desired(Ok(Some(state("1")))), MS(10));
        assert!(ev.is_empty());
        assert_eq!(s.next(now + S(4)), Step::Sleep(S(4)));
    }

    #[test]
    fn plain_polling_waits_the_poll_interval_even_after_a_slow_answer() {
        let mut t = timing(None);
        t.long_poll = Duration::ZERO;
        let (mut s, now) = online(t, Some("1"));
        assert_eq!(s.next(now), fetch(Some("1"), None));
        s.on_answer(Answer::Desired(Ok(None)), S(2));
        assert_eq!(s.next(now), Step::Sleep(S(4)));
    }

    #[test]
    fn backoff_doubles_up_to_the_poll_interval_and_resets_on_an_answer() {
        let mut now = Instant::now();
        let mut s = Session::new(timing(None), None);
        let mut waits = vec![];
        for _ in 0..5 {
            assert_eq!(s.next(now), Step::Register);
            let ev = s.on_answer(Answer::Registered(Err(api(503))), MS(1));
            let expected: &[&str] = if waits.is_empty() {
                &["link Offline"]
            } else {
                &[]
            };
            assert_eq!(kinds(&ev), expected);
            match s.next(now) {
                Step::Sleep(d) => {
                    waits.push(d);
                    now += d;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [MS(500), S(1), S(2), S(4), S(4)]);
        // A refusal (4xx) is reported, and backs off the same way.
        assert_eq!(s.next(now), Step::Register);
        let ev = s.on_answer(Answer::Registered(Err(api(400))), MS(1));
        assert_eq!(kinds(&ev), ["refused Some(400)"]);
        assert_eq!(s.next(now), Step::Sleep(S(4)));
        now += S(4);
        assert_eq!(s.next(now), Step::Register);
        let ev = s.on_answer(Answer::Registered(Ok(())), MS(1));
        assert_eq!(kinds(&ev), ["registered", "link Online"]);
        assert_eq!(s.next(now), fetch(None, None));
        // A lost call backs off from the start again.
        s.on_answer(Answer::Lost, Duration::ZERO);
        assert_eq!(s.next(now), Step::Sleep(MS(500)));
    }

    #[test]
    fn a_404_registers_again_at_once_and_keeps_the_etag() {
        let (mut s, now) = online(timing(None), Some("7"));
        assert_eq!(s.next(now), fetch(Some("7"), Some(S(5))));
        let ev = s.on_answer(Answer::Desired(Err(api(404))), MS(2));
        assert_eq!(kinds(&ev), ["forgotten"]);
        assert!(!s.registered());
        assert_eq!(s.next(now), Step::Register);
        let ev = s.on_answer(Answer::Registered(Ok(())), MS(2));
        assert_eq!(kinds(&ev), ["registered"]);
        assert_eq!(s.next(now), fetch(Some("7"), Some(S(5))));
    }

    #[test]
    fn a_master_restart_goes_offline_then_online_and_hands_over_only_new_states() {
        let (mut s, now) = online(timing(None), Some("3"));
        assert_eq!(s.next(now), fetch(Some("3"), Some(S(5))));
        let ev = s.on_answer(Answer::Desired(Err(api(502))), MS(2));
        assert_eq!(kinds(&ev), ["link Offline"]);
        assert_eq!(s.link(), LinkState::Offline);
        assert_eq!(s.next(now), Step::Sleep(MS(500)));
        // Back with the same state (etags survive a restart): nothing to hand over.
        let t = now + MS(500);
        assert_eq!(s.next(t), fetch(Some("3"), Some(S(5))));
        let ev = s.on_answer(Answer::Desired(Ok(Some(state("3")))), MS(2));
        assert_eq!(kinds(&ev), ["link Online"]);
        assert_eq!(s.next(t), Step::Sleep(S(4)));
        let t = t + S(4);
        assert_eq!(s.next(t), fetch(Some("3"), Some(S(5))));
        let ev = s.on_answer(Answer::Desired(Ok(Some(state("4")))), S(1));
        assert_eq!(kinds(&ev), ["desired 4"]);
        assert_eq!(s.etag(), Some("4"));
        // Another failure starts the backoff from its first delay again.
        s.on_answer(Answer::Desired(Err(api(500))), MS(1));
        assert_eq!(s.next(t), Step::Sleep(MS(500)));
    }

    #[test]
    fn other_fetch_errors_are_reported_and_backed_off() {
        let (mut s, now) = online(timing(None), None);
        assert_eq!(s.next(now), fetch(None, None));
        let ev = s.on_answer(Answer::Desired(Err(api(403))), MS(2));
        assert_eq!(kinds(&ev), ["failed Some(403)"]);
        assert_eq!(s.link(), LinkState::Online);
        assert_eq!(s.next(now), Step::Sleep(MS(500)));
    }

    #[test]
    fn an_emulated_hold_polls_every_step_until_the_hold_has_passed() {
        let (mut s, mut now) = online(timing(Some(S(1))), Some("1"));
        // Each fetch is at once; the session waits one step between them: 5 s hold, 1 s steps.
        let mut fetches = 0;
        let mut sleeps = vec![];
        while sleeps.len() < 8 {
            match s.next(now) {
                Step::Fetch { etag, wait } => {
                    assert_eq!((etag.as_deref(), wait), (Some("1"), None));
                    fetches += 1;
                    s.on_answer(Answer::Desired(Ok(None)), MS(100));
                    now += MS(100);
                }
                Step::Sleep(d) => {
                    sleeps.push(d);
                    now += d;
                }
                Step::Register => panic!("registered"),
            }
        }
        // Round 1: fetches at 0, 1.1, 2.2, 3.3 and 4.4 s (4.5 + 1 > 5: the round ends, slow
        // enough to go on at once); round 2 the same.
        assert_eq!(sleeps, [S(1); 8]);
        assert_eq!(fetches, 9);
        // A change ends the round.
        assert!(matches!(s.next(now), Step::Fetch { .. }));
        let ev = s.on_answer(Answer::Desired(Ok(Some(state("2")))), MS(100));
        assert_eq!(kinds(&ev), ["desired 2"]);
        assert_eq!(s.next(now), fetch(Some("2"), None));
    }

    #[test]
    fn an_emulated_hold_shorter_than_a_step_polls_at_the_poll_interval() {
        let mut t = timing(Some(S(1)));
        t.long_poll = MS(800);
        let (mut s, now) = online(t, Some("1"));
        assert_eq!(s.next(now), fetch(Some("1"), None));
        s.on_answer(Answer::Desired(Ok(None)), MS(100));
        assert_eq!(s.next(now), Step::Sleep(S(4)));
    }
}
