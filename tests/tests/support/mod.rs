pub mod emulated;
