//! Errors: L4Re's negative return codes and the kernel's IPC error codes.
//!
//! An L4Re server reports failure by replying with a negative label, `-L4_E…`
//! (`l4sys/include/err.h`). An IPC that fails in the kernel sets the error bit
//! in the returned message tag and leaves an `L4_IPC_…` code in the thread's
//! UTCB; L4Re folds those into the range `L4_EIPC_LO + code`. [`Error`]
//! covers both, converts from and to the wire code, and says in words what
//! went wrong.

use core::fmt;

/// The kernel's IPC error codes (`L4_IPC_*`, `l4sys/include/ipc.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IpcError {
    /// `L4_IPC_ENOT_EXISTENT`: the destination does not exist (or died), or
    /// the gate is not bound to a thread.
    NotExistent,
    /// `L4_IPC_SETIMEOUT`: the send phase timed out.
    SendTimeout,
    /// `L4_IPC_RETIMEOUT`: the receive phase timed out.
    RecvTimeout,
    /// `L4_IPC_SECANCELED`: the send phase was cancelled.
    SendCanceled,
    /// `L4_IPC_RECANCELED`: the receive phase was cancelled.
    RecvCanceled,
    /// `L4_IPC_SEMSGCUT`/`L4_IPC_REMSGCUT`: the message did not fit.
    MsgCut,
    /// `L4_IPC_SEMAPFAILED`/`L4_IPC_REMAPFAILED`: a map item could not be
    /// transferred.
    MapFailed,
    /// `L4_IPC_SEABORTED`/`L4_IPC_REABORTED`: the operation was aborted.
    Aborted,
    /// `L4_IPC_NO_REPLY_CAP`: there is nobody to reply to.
    NoReplyCap,
    /// Any other code the kernel reported.
    Other(u8),
}

impl IpcError {
    /// Decodes the kernel's error code (the low five bits of the UTCB error
    /// register).
    pub const fn from_raw(code: u64) -> Self {
        match code & 0x1f {
            0x04 | 0x05 => IpcError::NotExistent,
            0x02 => IpcError::SendTimeout,
            0x03 => IpcError::RecvTimeout,
            0x06 => IpcError::SendCanceled,
            0x07 => IpcError::RecvCanceled,
            0x08 | 0x09 => IpcError::MsgCut,
            0x10 | 0x11 => IpcError::MapFailed,
            0x0e | 0x0f => IpcError::Aborted,
            0x13 => IpcError::NoReplyCap,
            other => IpcError::Other(other as u8),
        }
    }

    /// The kernel's code for this error (receive-phase variant where the
    /// kernel distinguishes phases).
    pub const fn raw(self) -> u64 {
        match self {
            IpcError::NotExistent => 0x04,
            IpcError::SendTimeout => 0x02,
            IpcError::RecvTimeout => 0x03,
            IpcError::SendCanceled => 0x06,
            IpcError::RecvCanceled => 0x07,
            IpcError::MsgCut => 0x09,
            IpcError::MapFailed => 0x11,
            IpcError::Aborted => 0x0f,
            IpcError::NoReplyCap => 0x13,
            IpcError::Other(c) => c as u64,
        }
    }
}

/// An error from an L4Re operation.
///
/// The variants mirror `l4sys/include/err.h`; [`Error::code`] gives the
/// negative value that goes into a reply label, [`Error::from_code`] reads one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// `L4_EPERM`: no permission.
    Perm,
    /// `L4_ENOENT`: no such entity.
    NoEnt,
    /// `L4_EIO`: input/output error.
    Io,
    /// `L4_ENXIO`: no such device or address.
    NoDevOrAddr,
    /// `L4_E2BIG`: argument value too big.
    TooBig,
    /// `L4_EAGAIN`: try again.
    Again,
    /// `L4_ENOMEM`: out of memory.
    NoMem,
    /// `L4_EACCESS`: access denied (e.g. a writable mapping through a
    /// read-only capability).
    Access,
    /// `L4_EFAULT`: invalid memory address.
    Fault,
    /// `L4_EBUSY`: object busy.
    Busy,
    /// `L4_EEXIST`: already exists.
    Exist,
    /// `L4_ENODEV`: no such thing.
    NoDev,
    /// `L4_ENOTDIR`: not a directory.
    NotDir,
    /// `ENFILE` (23; POSIX's number, L4Re's `err.h` has none): the server's
    /// own table of objects or descriptors is full; other clients' objects
    /// must be released first.
    TableFull,
    /// `EMFILE` (24; POSIX's number, L4Re's `err.h` has none): this client
    /// holds as many objects of the server as the server's per-client limit
    /// allows; release some first.
    TooManyOpen,
    /// `L4_EINVAL`: invalid argument.
    Inval,
    /// `L4_ENOSPC`: no space left.
    NoSpace,
    /// `L4_ERANGE`: value out of range.
    Range,
    /// `L4_ENAMETOOLONG`: name too long.
    NameTooLong,
    /// `L4_ENOSYS`: operation (opcode) not implemented.
    NoSys,
    /// `L4_EBADPROTO`: the object does not speak this protocol.
    BadProto,
    /// `L4_EADDRNOTAVAIL`: address not available.
    AddrNotAvail,
    /// `L4_ENOREPLY`: no reply.
    NoReply,
    /// `L4_EMSGTOOSHORT`: the message ended before all its arguments.
    MsgTooShort,
    /// `L4_EMSGTOOLONG`: the arguments do not fit into the message registers.
    MsgTooLong,
    /// `L4_EMSGMISSARG`: a capability argument is missing or invalid.
    MsgMissArg,
    /// `L4_EDROPREPLY`: the server dropped the reply capability.
    DropReply,
    /// An IPC error reported by the kernel (`L4_EIPC_LO + code`).
    Ipc(IpcError),
    /// Any other negative code.
    Other(i64),
}

/// `L4_EIPC_LO`: start of the range into which IPC errors are folded.
pub const EIPC_LO: i64 = 2000;
/// `L4_EIPC_HI`: end of that range.
pub const EIPC_HI: i64 = 2000 + 0x1f;

impl Error {
    /// The (negative) code of this error as it appears in a reply label.
    pub const fn code(self) -> i64 {
        -(match self {
            Error::Perm => 1,
            Error::NoEnt => 2,
            Error::Io => 5,
            Error::NoDevOrAddr => 6,
            Error::TooBig => 7,
            Error::Again => 11,
            Error::NoMem => 12,
            Error::Access => 13,
            Error::Fault => 14,
            Error::Busy => 16,
            Error::Exist => 17,
            Error::NoDev => 19,
            Error::NotDir => 20,
            Error::Inval => 22,
            Error::TableFull => 23,
            Error::TooManyOpen => 24,
            Error::NoSpace => 28,
            Error::Range => 34,
            Error::NameTooLong => 36,
            Error::NoSys => 38,
            Error::BadProto => 39,
            Error::AddrNotAvail => 99,
            Error::NoReply => 1000,
            Error::MsgTooShort => 1001,
            Error::MsgTooLong => 1002,
            Error::MsgMissArg => 1003,
            Error::DropReply => 1005,
            Error::Ipc(e) => EIPC_LO + e.raw() as i64,
            Error::Other(c) => {
                if c < 0 {
                    -c
                } else {
                    c
                }
            }
        })
    }

    /// Reads a code as found in a reply label; positive values are taken as
    /// their negation (some C code returns `L4_E…` unnegated).
    pub const fn from_code(code: i64) -> Self {
        let c = if code < 0 { -code } else { code };
        match c {
            1 => Error::Perm,
            2 => Error::NoEnt,
            5 => Error::Io,
            6 => Error::NoDevOrAddr,
            7 => Error::TooBig,
            11 => Error::Again,
            12 => Error::NoMem,
            13 => Error::Access,
            14 => Error::Fault,
            16 => Error::Busy,
            17 => Error::Exist,
            19 => Error::NoDev,
            20 => Error::NotDir,
            22 => Error::Inval,
            23 => Error::TableFull,
            24 => Error::TooManyOpen,
            28 => Error::NoSpace,
            34 => Error::Range,
            36 => Error::NameTooLong,
            38 => Error::NoSys,
            39 => Error::BadProto,
            99 => Error::AddrNotAvail,
            1000 => Error::NoReply,
            1001 => Error::MsgTooShort,
            1002 => Error::MsgTooLong,
            1003 => Error::MsgMissArg,
            1005 => Error::DropReply,
            c if c >= EIPC_LO && c <= EIPC_HI => {
                Error::Ipc(IpcError::from_raw((c - EIPC_LO) as u64))
            }
            _ => Error::Other(-c),
        }
    }
}

impl fmt::Display for IpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpcError::NotExistent => {
                f.write_str("IPC partner does not exist (server gone or gate unbound)")
            }
            IpcError::SendTimeout => f.write_str("IPC send timed out"),
            IpcError::RecvTimeout => f.write_str("IPC receive timed out"),
            IpcError::SendCanceled => f.write_str("IPC send cancelled"),
            IpcError::RecvCanceled => f.write_str("IPC receive cancelled"),
            IpcError::MsgCut => f.write_str("IPC message cut (did not fit)"),
            IpcError::MapFailed => f.write_str("IPC map item could not be transferred"),
            IpcError::Aborted => f.write_str("IPC aborted"),
            IpcError::NoReplyCap => f.write_str("IPC reply without a caller to reply to"),
            IpcError::Other(c) => write!(f, "IPC error {c:#x}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Error::Perm => "no permission",
            Error::NoEnt => "no such entity",
            Error::Io => "input/output error",
            Error::NoDevOrAddr => "no such device or address",
            Error::TooBig => "argument too big",
            Error::Again => "try again",
            Error::NoMem => "out of memory",
            Error::Access => "access denied",
            Error::Fault => "invalid memory address",
            Error::Busy => "object busy",
            Error::Exist => "already exists",
            Error::NoDev => "no such device",
            Error::NotDir => "not a directory",
            Error::Inval => "invalid argument",
            Error::TableFull => "the server's table of open objects is full",
            Error::TooManyOpen => {
                "too many open objects for this client (the server's per-client limit)"
            }
            Error::NoSpace => "no space left",
            Error::Range => "value out of range",
            Error::NameTooLong => "name too long",
            Error::NoSys => "operation not implemented",
            Error::BadProto => "protocol not supported by this object",
            Error::AddrNotAvail => "address not available",
            Error::NoReply => "no reply",
            Error::MsgTooShort => "message too short for its arguments",
            Error::MsgTooLong => "arguments do not fit into the message registers",
            Error::MsgMissArg => "capability argument missing or invalid",
            Error::DropReply => "server dropped the reply",
            Error::Ipc(e) => return write!(f, "{e}"),
            Error::Other(c) => return write!(f, "error code {c}"),
        };
        write!(f, "{text} (L4 error {})", self.code())
    }
}

impl core::error::Error for Error {}

/// Result type of this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for c in 1..=2100i64 {
            let e = Error::from_code(-c);
            assert_eq!(Error::from_code(e.code()), e, "code {c}");
            assert!(e.code() < 0);
        }
        assert_eq!(Error::NoSys.code(), -38);
        assert_eq!(Error::from_code(-2004), Error::Ipc(IpcError::NotExistent));
    }
}
