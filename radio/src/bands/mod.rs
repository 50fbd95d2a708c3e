//! 3GPP frequency tables as data: E-UTRA ([`lte`]) and NR ([`nr`]).

pub mod lte;
pub mod nr;
