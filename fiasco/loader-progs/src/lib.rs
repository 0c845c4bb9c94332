//! `ext-loader` as an L4Re program (BID directory `fiasco/ext-loader`):
//! the staticlib that gives the C `main` its entry function, with
//! `l4re-rt`'s allocator and panic handler. The loader itself is
//! [`loader::fiasco`].
#![no_std]

#[cfg(feature = "fiasco")]
fn ext_loader(args: l4re_rt::Args) -> i32 {
    loader::fiasco::ext_loader::run((1..args.len()).filter_map(|i| args.get(i)))
}

#[cfg(feature = "fiasco")]
l4re_rt::entry!(ext_loader_main = ext_loader);
