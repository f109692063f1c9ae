//! Policies: the decisions that turn baselines into actions. Each takes plain data (a
//! route's baseline, the bucket under test, backend stats) and returns a decision; none
//! does I/O or keeps state, so the analyzer can run them on every tick and they can move
//! into wasm components unchanged in shape.
//!
//! [`builtin`] holds the native policies, which implement the seed's formulas exactly and
//! stay as the fallback whenever a plugin fails.

pub mod builtin;
pub mod types;
