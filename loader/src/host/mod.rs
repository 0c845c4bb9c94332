//! The Linux host realization of the loader: the task stub with the
//! internal pager ([`stub`]), its allocator ([`arena`]), the control
//! channel ([`ctl`]), `loader run` with the external pager ([`run`]) and
//! the pager of forked descendants ([`children`]).

pub mod arena;
pub mod children;
pub mod ctl;
pub mod profile;
pub mod run;
pub mod stub;
