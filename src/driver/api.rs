//! The public methods `Server` and `Client` share, written once: configuration and
//! address, link conditions, the ticks that are not particular to a side, waiting, events
//! and lingering. Each driver expands [`driver_api!`] inside its `impl` with its own names.

/// Expands to the methods every driver has. `$driver` is the driver type (with a `io: Io`
/// and an `endpoint: Endpoint` field), `$ctx` its event-handling context (a struct with one
/// field `$field: &mut $driver`), `$noun` how its docs name it, `$ctor` and `$close` the
/// constructor and the closing call shown in the examples.
macro_rules! driver_api {
    ($driver:ident, $ctx:ident, $field:ident, $noun:literal, $ctor:literal, $close:literal) => {
        /// The configuration in use.
        pub fn config(&self) -> &Config {
            self.endpoint.config()
        }

        /// The local socket address (for a client made by `connect`, the source address the
        /// OS chose for the server, not the wildcard).
        pub fn local_addr(&self) -> Result<SocketAddr, Error> {
            Ok(self.io.transport.local_addr()?)
        }

        /// Endpoint-wide counters (datagrams, bytes, drops by cause, handshakes).
        pub fn stats(&self) -> EndpointStats {
            self.endpoint.stats()
        }

        /// The sans-IO endpoint under this driver: the connection table, admission and
        /// events, for queries the driver does not forward.
        pub fn endpoint(&self) -> &Endpoint {
            &self.endpoint
        }

        #[doc = concat!("Sets link conditions (loss, latency, ...) on this ", $noun, "'s transport,")]
        /// for all peers, in one direction or both. Fails with [`Error::InvalidArgument`]
        /// without a conditioner (a driver made by `with_transport` rather than
        /// `bind`/`connect` or `with_conditioned_transport`).
        pub fn set_conditions(
            &mut self,
            direction: Direction,
            conditions: Conditions,
        ) -> Result<(), Error> {
            self.io.set_conditions(direction, conditions)
        }

        /// Sets link conditions for one peer address, overriding the global ones.
        pub fn set_peer_conditions(
            &mut self,
            peer: SocketAddr,
            direction: Direction,
            conditions: Conditions,
        ) -> Result<(), Error> {
            self.io.set_peer_conditions(peer, direction, conditions)
        }

        #[doc = concat!("The handle of this ", $noun, "'s link conditioner, for everything beyond")]
        /// `set_conditions`: per-peer conditions, statistics, reseeding (clone it to keep
        /// it). `None` for a driver made by `with_transport`.
        pub fn conditioner(&self) -> Option<&ConditionerHandle> {
            self.io.conditioner.as_ref()
        }

        /// Flushes what waits to be sent (new reliable messages, ACKs, due retransmissions,
        /// pings) and completes graceful disconnects; then hands the transport's held-back
        /// datagrams to the network.
        pub fn tick_outgoing(&mut self) {
            self.io.tick_outgoing(&mut self.endpoint);
        }

        /// Blocks until a datagram may have arrived, the next timer of a connection (or of
        /// the link conditioner) is due, or `max` passed — whichever comes first — so a
        /// headless loop sleeps in the OS poller instead of spinning or sleeping a fixed
        /// time. Returns at once when events are waiting or work is already due. Over the
        /// in-memory network (virtual time) it returns at once.
        ///
        /// ```no_run
        /// # use std::time::Duration;
        #[doc = concat!("# use kcpnet::{Config, ", stringify!($driver), "};")]
        #[doc = concat!("let mut endpoint = ", $ctor, "?;")]
        /// loop {
        ///     endpoint.tick_incoming();
        ///     // ... handle events, send ...
        ///     endpoint.tick_outgoing();
        ///     endpoint.wait(Duration::from_millis(16))?; // at most one 60 Hz frame
        /// }
        /// # Ok::<(), kcpnet::Error>(())
        /// ```
        pub fn wait(&mut self, max: Duration) -> Result<(), Error> {
            self.io.wait(&self.endpoint, max)
        }

        #[doc = concat!("How long until the ", $noun, " needs a tick: its earliest connection timer or")]
        /// delayed datagram, `Some(ZERO)` if work is already due (events waiting, sends to
        /// flush), and `None` if nothing is scheduled at all (every connection ended). Never
        /// a time in the past. Datagram arrival is not predicted: `wait` also wakes for
        /// that.
        pub fn poll_delay(&self) -> Option<Duration> {
            self.io.poll_delay(&self.endpoint)
        }

        #[doc = concat!("[`", stringify!($driver), "::tick_incoming`], then hands every event to `handler` together")]
        #[doc = concat!("with a [`", stringify!($ctx), "`] through which it can send, disconnect and query at")]
        /// once (as kcp2k's `OnData`). Message bytes are borrowed; nothing is allocated per
        /// message.
        pub fn tick_incoming_with<F>(&mut self, handler: F)
        where
            F: FnMut(&mut $ctx<'_>, Event<'_>),
        {
            self.tick_incoming();
            Io::dispatch($ctx { $field: self }, handler);
        }

        #[doc = concat!("The queued events, each handed out with a [`", stringify!($ctx), "`] so the application")]
        /// can reply while it holds the event, without copying the message (see
        /// [`EventDrain`]).
        pub fn drain_events(&mut self) -> EventDrain<$ctx<'_>> {
            EventDrain::new($ctx { $field: self })
        }

        #[doc = concat!("The next event, if any. Message data borrows the ", $noun, " until the next call;")]
        #[doc = concat!("to reply while holding an event use [`", stringify!($driver), "::drain_events`].")]
        pub fn poll_event(&mut self) -> Option<Event<'_>> {
            self.endpoint.poll_event()
        }

        /// Events waiting in the queue.
        pub fn pending_events(&self) -> usize {
            self.endpoint.pending_events()
        }

        /// Keeps the network running until every connection has ended and the transport
        /// holds nothing back (a link conditioner's delayed datagrams, a batch not yet
        /// flushed), or `max` passed; returns whether it finished. Events raised meanwhile
        /// (the `Disconnected`s) stay queued for `poll_event`.
        ///
        /// This is the clean way to stop: close first (`disconnect`, `disconnect_with` and
        /// `Server::shutdown` send their close datagrams within the call; a graceful close
        /// still needs the peer's acknowledgements), then linger, so that nothing the peers
        /// are owed is lost with the process:
        ///
        /// ```no_run
        /// # use std::time::Duration;
        #[doc = concat!("# use kcpnet::{Config, ", stringify!($driver), "};")]
        #[doc = concat!("# let mut endpoint = ", $ctor, "?;")]
        #[doc = concat!("endpoint.", $close, ";")]
        /// if !endpoint.linger(Duration::from_secs(3)) {
        ///     eprintln!("some peers did not acknowledge in time");
        /// }
        /// # Ok::<(), kcpnet::Error>(())
        /// ```
        pub fn linger(&mut self, max: Duration) -> bool {
            self.io.linger(&mut self.endpoint, max)
        }
    };
}
pub(crate) use driver_api;
