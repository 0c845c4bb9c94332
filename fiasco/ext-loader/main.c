/* ext-loader: loads static programs from l4fs into new tasks and serves
 * their page faults as their external pager (crate l4re-loader-progs,
 * fiasco/loader-progs, linked as a staticlib). */
int ext_loader_main(int argc, char **argv);

int main(int argc, char **argv)
{
  return ext_loader_main(argc, argv);
}
