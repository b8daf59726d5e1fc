//! Shared helpers for the workspace's end-to-end tests and comparative benchmarks.
