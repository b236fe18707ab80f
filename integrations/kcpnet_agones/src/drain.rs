//! Draining without Agones: a SIGTERM/SIGINT flag and the drain itself.
//!
//! Every fleet manager (Agones, Nomad, systemd, Edgegap, Hathora, …) stops a process with
//! SIGTERM and a grace period. [`DrainSignal::install`] turns SIGTERM and SIGINT into a flag
//! the game loop reads each frame; [`drain`] then stops admitting, closes every connection
//! gracefully with the app's reason and lingers until they have all ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kcpnet::Server;

/// The close code a drain sends by default (as WebSocket's 1001, "going away").
pub const DEFAULT_DRAIN_CODE: u32 = 1001;
/// The close message a drain sends by default.
pub const DEFAULT_DRAIN_MESSAGE: &str = "server draining";

/// A flag set by SIGTERM or SIGINT (on Unix), or by [`DrainSignal::request`]. Reading it is
/// one atomic load: check it every frame. Dropping it uninstalls the handlers (a later
/// SIGTERM then terminates the process as usual).
#[derive(Debug)]
pub struct DrainSignal {
    flag: Arc<AtomicBool>,
    #[cfg(unix)]
    ids: Vec<signal_hook::SigId>,
}

impl DrainSignal {
    /// Installs handlers for SIGTERM and SIGINT that set the flag (and do nothing else: the
    /// process keeps running until the loop drains). On other systems this is
    /// [`DrainSignal::manual`].
    pub fn install() -> std::io::Result<DrainSignal> {
        let flag = Arc::new(AtomicBool::new(false));
        #[cfg(unix)]
        {
            let mut ids = Vec::new();
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                ids.push(signal_hook::flag::register(signal, flag.clone())?);
            }
            Ok(DrainSignal { flag, ids })
        }
        #[cfg(not(unix))]
        Ok(DrainSignal { flag })
    }

    /// A flag no signal sets: only [`DrainSignal::request`] does (tests, an admin command).
    pub fn manual() -> DrainSignal {
        DrainSignal {
            flag: Arc::new(AtomicBool::new(false)),
            #[cfg(unix)]
            ids: Vec::new(),
        }
    }

    /// Whether a drain was requested.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Requests a drain, as a SIGTERM would.
    pub fn request(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

impl Drop for DrainSignal {
    fn drop(&mut self) {
        #[cfg(unix)]
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Drains a server: [`Server::begin_drain`] with `code` and `message` (unless it is already
/// draining), then [`Server::linger`] for at most `linger`. Returns whether every connection
/// ended in time. The `Disconnected` events stay queued for the caller.
///
/// Fails with [`kcpnet::Error::ReasonTooLong`] for a message the close datagram cannot
/// carry (128 bytes at most), before anything changes.
pub fn drain(
    server: &mut Server,
    code: u32,
    message: &str,
    linger: Duration,
) -> Result<bool, kcpnet::Error> {
    if !server.is_draining() {
        server.begin_drain(code, message)?;
    }
    Ok(server.linger(linger))
}
