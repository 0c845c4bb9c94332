//! The userfaultfd the host pagers serve faults from: [`l4re::host::uffd`],
//! the host platform's page-fault mechanism, re-exported under its old
//! path.

pub use l4re::host::uffd::*;
