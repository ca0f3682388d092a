pub mod emulated;
pub mod fixtures;
