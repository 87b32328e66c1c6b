//! The map for keys a client chooses: execution and conversation IDs.
//!
//! The standard `HashMap` hashes with SipHash-1-3, which resists a client
//! that picks keys to collide but costs about 100 instructions for a short
//! ID; the Emitter and the Registry hash each event's execution ID several
//! times on its way through (PERFORMANCE.md, "Profile findings: ingest").
//! foldhash is several times cheaper and is still seeded at random per
//! process, so a client cannot learn colliding IDs offline. Maps keyed by
//! the broker's own numbers use `rustc_hash::FxHashMap` instead.

/// A `HashMap` keyed by IDs clients choose, hashed with a per-process seed.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A new, empty [`IdMap`].
pub fn id_map<K, V>() -> IdMap<K, V> {
    IdMap::default()
}
