//! Fetching updates from a repository. For now only the delta payload: its
//! format and how a device applies it ([`delta`]); the host makes deltas
//! (`edgeimg publish`) and applies them with this same code in its tests.

pub mod delta;
