//! Benchmarks for sluice. The side-by-side runner against nginx and the criterion benchmarks arrive with the
//! benchmark work; this crate holds their shared code.
