//! Raw bindings to the L4Re C API (placeholder until the fiasco build script lands).
#![no_std]
