//! The task stub: the first program of a new task on the host. It carries
//! the internal pager and starts the loaded program (see
//! `loader::host::stub`). Its allocator never uses `brk`, which belongs to
//! the program.

use loader::host::arena::Arena;

#[global_allocator]
static ARENA: Arena = Arena::new();

fn main() {
    loader::host::stub::main(&ARENA)
}
