//! Cross-reference validation.
