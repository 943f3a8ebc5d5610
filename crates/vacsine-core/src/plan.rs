//! Remediation planning (filled below).
