//! Stand-ins without the `secure` feature: no datagram parses as sealed and no session can
//! exist (`Session` has no values), so the connection and the endpoint compile the same code
//! and its secure paths never run.
#![allow(dead_code)]

/// Bytes of a session's salt (unused without the feature).
pub(crate) const SALT_BYTES: usize = 16;

/// What sealing adds (unused without the feature).
pub const SEAL_OVERHEAD: usize = 24;

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

/// A sealed datagram's clear parts; never made without the feature.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sealed<'a> {
    pub(crate) cookie: u32,
    pub(crate) token: Option<&'a [u8]>,
    pub(crate) pn: u64,
}

impl<'a> Sealed<'a> {
    /// Always `None` without the feature.
    pub(crate) fn parse(_data: &'a [u8]) -> Option<Sealed<'a>> {
        None
    }
}

/// Packet numbers seen (never made without the feature).
#[derive(Debug)]
pub(crate) struct ReplayWindow;

impl ReplayWindow {
    pub(crate) fn is_newest(&self, _pn: u64) -> bool {
        false
    }
}

/// The AEAD of a session (unused without the feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CipherSuite {
    Aes256Gcm,
    ChaCha20Poly1305,
}

/// A secure session: none exists without the feature.
#[derive(Debug)]
pub(crate) enum Session {}

impl Session {
    pub(crate) fn window(&self) -> &ReplayWindow {
        match *self {}
    }

    pub(crate) fn settle(&mut self, _suite: CipherSuite) {
        match *self {}
    }

    pub(crate) fn seal(
        &mut self,
        _head: &[u8],
        _body: &[u8],
        _token: Option<&[u8]>,
        _out: &mut Vec<u8>,
    ) -> bool {
        match *self {}
    }

    pub(crate) fn open(&mut self, _d: &Sealed<'_>, _out: &mut Vec<u8>) -> Result<u64, OpenError> {
        match *self {}
    }
}
