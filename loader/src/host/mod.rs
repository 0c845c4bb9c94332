//! The Linux host realization of the loader: the task stub with the
//! internal pager ([`stub`]), its allocator ([`arena`]), the control
//! channel ([`ctl`]), `loader run` with the external pager ([`run`]),
//! the pager of forked descendants ([`children`]) and the optional
//! confinement of the program ([`confine`]).

pub mod arena;
pub mod children;
pub mod confine;
pub mod ctl;
pub mod profile;
pub mod ready;
pub mod run;
pub mod stub;
