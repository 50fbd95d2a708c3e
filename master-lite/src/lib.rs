//! # master-lite — the lightweight master
