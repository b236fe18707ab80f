//! [`EventDrain`]: the drained-queue form in which the application can reply to each event
//! while it holds it.
//!
//! The drain moves the endpoint's event queue out of the endpoint for as long as it lives.
//! An event borrows the drain's queue, and the endpoint handle borrows the drain's other
//! field, so both can be used at once: `send` and `disconnect` on the endpoint while the
//! message bytes are still borrowed from the receive arena. Events raised while the drain
//! is open (for example the `Disconnected` of a connection the handler kicked) go to the
//! endpoint's own queue and are handed out by the same drain once its queue is empty.

use crate::endpoint::Endpoint;
use crate::event::{Event, EventQueue};

/// Implemented by the endpoint handles an [`EventDrain`] hands out
/// ([`crate::ServerCtx`], [`crate::ClientCtx`]). Not implementable outside kcpnet.
pub trait Drainable: sealed::Sealed {
    #[doc(hidden)]
    fn endpoint(&mut self) -> &mut Endpoint;
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// Implements what an endpoint's event-handling context (`$ctx<'a> { $field: &'a mut
/// $endpoint }`) needs: `Deref`/`DerefMut` to the driver, and [`Drainable`].
macro_rules! endpoint_context {
    ($ctx:ident, $endpoint:ty, $field:ident) => {
        impl std::ops::Deref for $ctx<'_> {
            type Target = $endpoint;
            fn deref(&self) -> &$endpoint {
                self.$field
            }
        }

        impl std::ops::DerefMut for $ctx<'_> {
            fn deref_mut(&mut self) -> &mut $endpoint {
                self.$field
            }
        }

        impl $crate::driver::drain::sealed::Sealed for $ctx<'_> {}

        impl $crate::driver::Drainable for $ctx<'_> {
            fn endpoint(&mut self) -> &mut $crate::endpoint::Endpoint {
                &mut self.$field.endpoint
            }
        }
    };
}
pub(crate) use endpoint_context;

/// The events of one endpoint, each handed out together with the endpoint, so the
/// application can reply, kick or query while it holds the event — without copying the
/// message and without allocating. Made by [`crate::Server::drain_events`] and
/// [`crate::Client::drain_events`].
///
/// ```
/// # use kcpnet::{Config, Event, Server, Error};
/// # let mut server = Server::bind("127.0.0.1:0", Config::default()).unwrap();
/// server.tick_incoming();
/// let mut events = server.drain_events();
/// while let Some((event, server)) = events.next() {
///     if let Event::Data { id, channel, data } = event {
///         match server.send(id, data, channel) {
///             Ok(()) | Err(Error::ConnectionClosed) => {} // it left during this tick
///             Err(e) => eprintln!("echo to {id} failed: {e}"),
///         }
///     }
/// }
/// ```
///
/// Dropping the drain early keeps the events not handed out yet for the next drain or
/// `poll_event`.
pub struct EventDrain<E: Drainable> {
    queue: EventQueue,
    endpoint: E,
}

impl<E: Drainable> EventDrain<E> {
    pub(crate) fn new(mut endpoint: E) -> EventDrain<E> {
        let core = &mut endpoint.endpoint().shared;
        core.dispatching += 1;
        let queue = std::mem::take(&mut core.events);
        EventDrain { queue, endpoint }
    }

    /// The next event and the endpoint, or `None` when every event has been handed out
    /// (including those raised by the calls made while draining).
    #[allow(clippy::should_implement_trait)] // a lending iterator: items borrow the drain
    pub fn next(&mut self) -> Option<(Event<'_>, &mut E)> {
        let core = &mut self.endpoint.endpoint().shared;
        for id in core.closed_in_dispatch.drain(..) {
            self.queue.cancel_data(id);
        }
        if self.queue.is_drained() && !core.events.is_empty() {
            std::mem::swap(&mut self.queue, &mut core.events);
        }
        let event = self.queue.pop()?;
        Some((event, &mut self.endpoint))
    }

    /// The endpoint, between events.
    pub fn endpoint(&mut self) -> &mut E {
        &mut self.endpoint
    }
}

impl<E: Drainable> Drop for EventDrain<E> {
    fn drop(&mut self) {
        let core = &mut self.endpoint.endpoint().shared;
        core.dispatching -= 1;
        for id in core.closed_in_dispatch.drain(..) {
            self.queue.cancel_data(id);
        }
        if core.dispatching == 0 {
            core.closed_in_dispatch.clear();
        }
        // Undelivered events come first, then those raised while draining.
        self.queue.append(&mut core.events);
        // Keep the queue whose arena has grown: no reallocation next tick.
        if self.queue.arena_capacity() >= core.events.arena_capacity() || !self.queue.is_empty() {
            std::mem::swap(&mut self.queue, &mut core.events);
        }
    }
}
