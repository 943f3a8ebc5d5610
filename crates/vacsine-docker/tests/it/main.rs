//! Integration tests (real Docker).
