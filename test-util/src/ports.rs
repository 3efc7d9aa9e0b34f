use std::sync::Mutex;

use mesh_local_ports::{PortAllocator, Reservations};

/// Every port handed out by [`free_port`] stays reserved (against `meshctl up` and other test
/// processes) until this process ends.
static RESERVED: Mutex<Vec<Reservations>> = Mutex::new(Vec::new());

/// A TCP port on 127.0.0.1 that was free when this returned, reserved machine-wide for this
/// process (see `mesh_local_ports`): another test or a `meshctl up` will not be given it.
///
/// Only for configuration that must name a port before the server starts (an Envoy
/// bootstrap, a child process's flags). A program that binds a fixed port could still take it
/// before the real bind. Servers of our own bind port 0 and report the real address instead.
pub fn free_port() -> u16 {
    let mut ports = PortAllocator::default();
    let port = ports
        .allocate()
        .expect("a free 127.0.0.1 port on a test machine")
        .port();
    RESERVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ports.release_probes());
    port
}
