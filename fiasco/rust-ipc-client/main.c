/* rust-ipc-client: an L4Re program whose code is Rust (crate l4re-fiasco-progs,
 * linked as a staticlib). L4Re's libc starts the program and calls main. */
int rust_ipc_client(int argc, char **argv);

int main(int argc, char **argv)
{
  return rust_ipc_client(argc, argv);
}
