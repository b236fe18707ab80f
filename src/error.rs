//! Error types: [`Error`] for mistakes the application can handle (returned from API
//! calls), and [`ErrorCode`] for problems reported through [`crate::Event::Error`].

use std::fmt;

/// Why a connection reported an error, with kcp2k's numeric values so logs and
/// tools line up across the C# and Rust sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The host name could not be resolved to an address.
    DnsResolve = 0,
    /// Nothing was received for the configured timeout, or the link is dead
    /// (a segment reached `max_retransmits` transmissions).
    Timeout = 1,
    /// The connection's queues grew past the choke threshold.
    Congestion = 2,
    /// The peer sent something that violates the protocol.
    InvalidReceive = 3,
    /// The application tried to send something that cannot be sent.
    InvalidSend = 4,
    /// The socket or the peer closed the connection.
    ConnectionClosed = 5,
    /// Anything else.
    Unexpected = 6,
    /// kcpnet only: a reliable send was refused because the connection's send queue holds
    /// `send_queue_limit` bytes (backpressure; the connection stays open).
    SendQueueFull = 7,
}

impl ErrorCode {
    /// A short name for the code, as used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::DnsResolve => "dns-resolve",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Congestion => "congestion",
            ErrorCode::InvalidReceive => "invalid-receive",
            ErrorCode::InvalidSend => "invalid-send",
            ErrorCode::ConnectionClosed => "connection-closed",
            ErrorCode::Unexpected => "unexpected",
            ErrorCode::SendQueueFull => "send-queue-full",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors returned by kcpnet's API calls.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error (bind, socket options, send).
    Io(std::io::Error),
    /// A configuration value is impossible; the message says which and why.
    InvalidConfig(String),
    /// An argument passed by the application is out of range.
    InvalidArgument(String),
    /// A host name could not be resolved.
    DnsResolve(String),
    /// The connection id was never handed out by this endpoint.
    UnknownConnection,
    /// The connection has closed: the peer left, timed out or was disconnected, possibly
    /// in the same tick whose events the application is still handling. Not a fault of
    /// the application and not fatal: its remaining events explain why
    /// (`Disconnected { reason }`), and nothing more can be sent to it.
    ConnectionClosed,
    /// The connection is not (or no longer) able to send.
    NotConnected,
    /// Empty messages cannot be sent (kcp2k treats them as a protocol error).
    EmptyMessage,
    /// Backpressure: the connection's reliable send queue already holds
    /// `Config::send_queue_limit` bytes. Nothing was queued and the connection stays open;
    /// send again once [`crate::Server::send_capacity`] is positive (the peer acknowledges
    /// as fast as the link allows).
    SendQueueFull {
        /// Bytes queued or in flight on the connection (segments × mss).
        queued: usize,
        /// The configured limit.
        limit: usize,
    },
    /// This side shut down its sending (`shutdown_send`): nothing more can be sent on the
    /// connection, which still receives until the peer shuts down too.
    SendClosed,
    /// A close message (`disconnect_with`) is longer than a Close datagram can carry:
    /// [`crate::CloseMessage::MAX_LEN`] bytes, fewer with an `mtu` under 140.
    ReasonTooLong {
        /// The message's length in bytes.
        size: usize,
        /// The longest message this connection can send.
        max: usize,
    },
    /// The message is larger than the channel allows.
    MessageTooLarge {
        /// The size the application asked to send.
        size: usize,
        /// The largest size the channel accepts with the current config.
        max: usize,
    },
}

impl Error {
    /// The kcp2k [`ErrorCode`] that corresponds to this error (`InvalidSend` for rejected
    /// sends, `DnsResolve` for resolution failures).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::DnsResolve(_) => ErrorCode::DnsResolve,
            Error::ConnectionClosed => ErrorCode::ConnectionClosed,
            Error::SendQueueFull { .. } => ErrorCode::SendQueueFull,
            Error::UnknownConnection
            | Error::NotConnected
            | Error::EmptyMessage
            | Error::SendClosed
            | Error::MessageTooLarge { .. } => ErrorCode::InvalidSend,
            Error::ReasonTooLong { .. } => ErrorCode::Unexpected,
            Error::Io(_) => ErrorCode::ConnectionClosed,
            Error::InvalidConfig(_) | Error::InvalidArgument(_) => ErrorCode::Unexpected,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::InvalidConfig(m) => write!(f, "invalid config: {m}"),
            Error::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
            Error::DnsResolve(m) => write!(f, "could not resolve host: {m}"),
            Error::UnknownConnection => f.write_str("unknown connection id"),
            Error::ConnectionClosed => f.write_str("the connection has closed"),
            Error::SendQueueFull { queued, limit } => write!(
                f,
                "send queue full: {queued} bytes queued, limit {limit} (try again after a tick)"
            ),
            Error::NotConnected => f.write_str("not connected"),
            Error::EmptyMessage => f.write_str("empty messages cannot be sent"),
            Error::SendClosed => f.write_str(
                "this side shut down its sending (shutdown_send): nothing more can be sent",
            ),
            Error::ReasonTooLong { size, max } => write!(
                f,
                "close message of {size} bytes exceeds the maximum of {max} bytes"
            ),
            Error::MessageTooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes exceeds the channel maximum of {max}"
                )
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
