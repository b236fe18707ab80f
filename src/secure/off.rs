//! Stand-ins without the `secure` feature: types with no values, so the connection and the
//! endpoint compile the same code and the secure paths can never run.

/// What sealing adds (unused without the feature).
pub const SEAL_OVERHEAD: usize = 24;
/// Bytes of a token blob (unused without the feature).
pub(crate) const TOKEN_BLOB_BYTES: usize = 555;

/// Without the feature no datagram is taken as sealed: it is parsed as kcp2k and dropped.
pub(crate) fn is_sealed(_first: u8) -> bool {
    false
}

/// Why a sealed datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    Replayed,
    Forged,
}

/// A sealed datagram: none exists without the feature.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sealed<'a> {
    #[allow(dead_code)]
    Never(std::convert::Infallible, std::marker::PhantomData<&'a ()>),
}

/// A secure session: none exists without the feature.
#[derive(Debug)]
pub(crate) enum Session {}
