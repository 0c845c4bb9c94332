//! The Linux host realization of the loader: the task stub with the
//! internal pager ([`stub`]), its allocator ([`arena`]), the control
//! channel ([`ctl`]) and `loader run` with the external pager ([`run`]).

pub mod arena;
pub mod ctl;
pub mod run;
pub mod stub;
