/* l4fs-client: a Rust client of l4fs's own protocols (crate l4fs, module
 * fiasco::client), printing TAP for L4Re's test harness. */
int l4fs_client(int argc, char **argv);

int main(int argc, char **argv)
{
  return l4fs_client(argc, argv);
}
