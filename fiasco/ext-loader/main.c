/* ext-loader: loads static programs from l4fs into new tasks and serves
 * their page faults as their external pager (loader::fiasco, through the
 * staticlib crate l4re-loader-progs in fiasco/loader-progs). */
int ext_loader_main(int argc, char **argv);

int main(int argc, char **argv)
{
  return ext_loader_main(argc, argv);
}
