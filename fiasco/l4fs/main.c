/* l4fs: the filesystem server (crate l4fs, servers/, linked as a staticlib).
 * L4Re's libc starts the program and calls main. */
int l4fs_server(int argc, char **argv);

int main(int argc, char **argv)
{
  return l4fs_server(argc, argv);
}
