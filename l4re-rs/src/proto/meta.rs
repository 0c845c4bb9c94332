//! `L4::Meta` (label `L4_PROTO_META`, -21): which protocols an object speaks.
//! L4Re's VFS and ned classify objects with it. The server loop answers it
//! for every object from the object's protocol list.

use crate::protocol;
use crate::rpc::WithCode;

/// `L4_PROTO_META`.
pub const LABEL: i64 = -21;

protocol! {
    /// Object introspection.
    pub protocol Meta: client MetaClient, server MetaServer, label -21, opcode i32 {
        /// Number of interfaces, as the reply label.
        0 => fn num_interfaces() -> WithCode<()>;
        /// Protocol number and name of interface `idx`.
        1 => fn interface(idx: u64) -> WithCode<(i64, alloc::string::String)>;
        /// 1 as the label if `protocol` is supported, else 0.
        2 => fn supports(protocol: i64) -> WithCode<()>;
    }
}
