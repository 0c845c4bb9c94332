//! L4Re's protocols, declared with [`protocol!`](crate::protocol).
//!
//! Labels, opcodes and argument order follow the l4re-core headers
//! (`l4re/include/dataspace`, `itas`, `namespace`, `parent`, `rm`, `l4sys/include/meta`,
//! `l4sys/include/types.h` for the page-fault protocol) of the snapshot named
//! in `docs/architecture.md`, so that our servers serve stock L4Re clients
//! and our clients use stock L4Re servers.

pub mod dataspace;
pub mod itas;
pub mod meta;
pub mod namespace;
pub mod pager;
pub mod parent;
pub mod rm;

pub use dataspace::{Dataspace, DataspaceClient, DataspaceServer};
pub use itas::{Itas, ItasClient, ItasServer};
pub use meta::{Meta, MetaClient, MetaServer};
pub use namespace::{Namespace, NamespaceClient, NamespaceServer};
pub use pager::{PageFault, PageFaultClient, PageFaultServer};
pub use parent::{Parent, ParentClient, ParentServer};
pub use rm::{Rm, RmClient, RmServer};
