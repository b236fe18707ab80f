//! Unit tests of the KCP core for edge cases the conformance vectors do not cover.
