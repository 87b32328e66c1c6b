//! Demo actors (being written).
