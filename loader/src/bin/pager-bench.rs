//! Paging benchmark (see loader/README.md).
fn main() {
    loader::bench::main()
}
