//! The SQLite schema and typed store (placeholder).
