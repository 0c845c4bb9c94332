//! Remote procedure calls: one declaration of a protocol gives typed client
//! stubs and server dispatch.
//!
//! [`protocol!`](crate::protocol) takes a protocol's label, its opcode
//! convention and its operations with explicit opcodes, and generates:
//!
//! * a marker type (a [`CapKind`](crate::cap::CapKind)) so that
//!   `Cap<Dataspace>` is a capability to a dataspace;
//! * a client trait implemented for `Cap<Marker>`, whose methods marshal the
//!   arguments exactly as L4Re's C++ framework does (see [`crate::msg`]),
//!   call, check the reply label and unmarshal the results;
//! * a server trait with one method per operation, receiving the decoded
//!   arguments, and `Marker::dispatch`, which decodes a request, calls the
//!   method and encodes the reply, turning every malformed request into an
//!   error reply instead of a panic.
//!
//! ```
//! use l4re::{protocol, Result};
//! use l4re::rpc::Request;
//!
//! protocol! {
//!     /// A calculator.
//!     pub protocol Calc: client CalcClient, server CalcServer, label 0x7000, opcode i32 {
//!         /// Adds two numbers.
//!         0 => fn add(a: u64, b: u64) -> u64;
//!         /// Says hello.
//!         1 => fn greet(name: &str) -> String;
//!     }
//! }
//!
//! struct Impl;
//! impl CalcServer for Impl {
//!     fn add(&self, _: &mut Request<'_>, a: u64, b: u64) -> Result<u64> { Ok(a + b) }
//!     fn greet(&self, _: &mut Request<'_>, name: String) -> Result<String> { Ok(format!("hi {name}")) }
//! }
//! ```

use crate::cap::CapIdx;
use crate::error::{Error, Result};
use crate::ipc::{self, Timeout};
use crate::msg::{Marshal, MsgReader, MsgTag, MsgWriter, RcvCapSlots};
use crate::utcb::Utcb;

/// Return code of a reply: the label is the value of the call, which some
/// L4Re operations use (`L4::Meta`, Rm `detach`). As an out-type it puts its
/// code into the reply label and reads it from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WithCode<T>(pub i64, pub T);

impl<T: Marshal> Marshal for WithCode<T> {
    type Decoded = WithCode<T::Decoded>;
    fn write(&self, w: &mut MsgWriter<'_>) -> Result<()> {
        self.1.write(w)
    }
    fn read(r: &mut MsgReader<'_>) -> Result<Self::Decoded> {
        Ok(WithCode(r.label(), T::read(r)?))
    }
    fn reply_label(&self) -> i64 {
        self.0
    }
}

/// A request being served: its tag, the label of the gate it came through,
/// and the slots where capabilities it carried were received.
pub struct Request<'a> {
    tag: MsgTag,
    label: u64,
    rcv: &'a mut RcvCapSlots,
}

impl<'a> Request<'a> {
    /// Wraps a received message.
    pub fn new(tag: MsgTag, label: u64, rcv: &'a mut RcvCapSlots) -> Self {
        Request { tag, label, rcv }
    }

    /// The message tag.
    pub fn tag(&self) -> MsgTag {
        self.tag
    }

    /// The gate label without the rights bits: which object is addressed.
    pub fn object(&self) -> u64 {
        self.label & !3
    }

    /// The W and S rights of the caller's capability (the low bits of the
    /// gate label).
    pub fn rights(&self) -> crate::cap::CapRights {
        crate::cap::CapRights::from_bits_truncate((self.label & 3) as u8)
    }

    /// The opcode (first `int` of the message), if the message has one.
    pub fn opcode(&self) -> Result<i32> {
        if self.tag.words() == 0 {
            return Err(Error::MsgTooShort);
        }
        Utcb::with(|u| Ok(u.mr()[0] as u32 as i32))
    }

    /// Decodes (part of) the request with `f`; the UTCB is borrowed only for
    /// the length of `f`, so the handler may make calls afterwards.
    pub fn decode<R>(&mut self, f: impl FnOnce(&mut MsgReader<'_>) -> Result<R>) -> Result<R> {
        let tag = self.tag;
        let rcv = &mut *self.rcv;
        Utcb::with(|u| {
            let mut r = MsgReader::new(u, tag)?.with_rcv_caps(rcv);
            f(&mut r)
        })
    }

    /// Encodes the reply value `out` and returns the reply tag (label from
    /// [`Marshal::reply_label`], 0 for most types).
    pub fn reply<T: Marshal>(&mut self, out: &T) -> Result<MsgTag> {
        Utcb::with(|u| {
            let mut w = MsgWriter::new(u);
            out.write(&mut w)?;
            w.finish(out.reply_label())
        })
    }
}

/// Performs one RPC: writes the opcode (if any) and the arguments with
/// `args`, calls `dest` with `label`, fails on an IPC error or a negative
/// reply label, and reads the result with `T::read`.
pub fn call<T: Marshal>(
    dest: CapIdx,
    label: i64,
    opcode: Option<i32>,
    timeout: Timeout,
    args: impl FnOnce(&mut MsgWriter<'_>) -> Result<()>,
) -> Result<T::Decoded> {
    Utcb::with(|u| {
        let tag = {
            let mut w = MsgWriter::new(u);
            if let Some(op) = opcode {
                op.write(&mut w)?;
            }
            args(&mut w)?;
            w.finish(label)?
        };
        let reply = ipc::call(
            crate::cap::Cap::<crate::cap::Untyped>::from_idx(dest),
            u,
            tag,
            timeout,
        )?;
        if reply.label() < 0 {
            return Err(Error::from_code(reply.label()));
        }
        let mut r = MsgReader::new(u, reply)?;
        T::read(&mut r)
    })
}

/// Implemented by every protocol marker generated by
/// [`protocol!`](crate::protocol).
pub trait Protocol: crate::cap::CapKind {
    /// The protocol label.
    const LABEL: i64;
}

/// Declares an IPC protocol once; see the [module documentation](self).
///
/// Syntax:
///
/// ```text
/// protocol! {
///     /// docs
///     pub protocol Marker: client ClientTrait, server ServerTrait, label EXPR, opcode i32 {
///         /// docs
///         OPCODE => fn name(arg: Type, ...) [buffers(buf: RcvBuf, ...)] -> OutType;
///         ...
///     }
/// }
/// ```
///
/// `opcode none` declares a protocol without opcodes (one operation, like
/// the page-fault protocol). Argument types implement
/// [`Marshal`](crate::msg::Marshal); the server method receives their
/// `Decoded` types. `buffers(...)` are client-side receive buffers
/// ([`RcvBuf`](crate::fpage::RcvBuf)) that the server never sees. Out-types
/// are `Marshal` types whose `Decoded` type is what the client gets.
#[macro_export]
macro_rules! protocol {
    (
        $(#[$m:meta])*
        $vis:vis protocol $name:ident : client $client:ident, server $server:ident, label $label:expr, opcode $opk:ident {
            $(
                $(#[$fm:meta])*
                $op:literal => fn $f:ident ( $($a:ident : $t:ty),* $(,)? )
                    $(buffers ( $($b:ident : $bt:ty),* $(,)? ))?
                    -> $ret:ty;
            )*
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {}

        impl $crate::cap::CapKind for $name {
            const NAME: &'static str = stringify!($name);
        }

        impl $crate::rpc::Protocol for $name {
            const LABEL: i64 = $label;
        }

        #[doc = concat!("Client side of the [`", stringify!($name), "`] protocol.")]
        $vis trait $client {
            /// The capability the calls go to.
            fn target(&self) -> $crate::cap::CapIdx;
            /// Timeout of every call (default: wait forever).
            fn timeout(&self) -> $crate::ipc::Timeout { $crate::ipc::Timeout::Never }
            $(
                $(#[$fm])*
                #[allow(clippy::too_many_arguments)]
                fn $f(&self, $($a: $t,)* $($($b: $bt,)*)?)
                    -> $crate::Result<<$ret as $crate::msg::Marshal>::Decoded>
                {
                    $crate::rpc::call::<$ret>(
                        self.target(),
                        $label,
                        $crate::protocol!(@opcode $opk $op),
                        self.timeout(),
                        |_w| {
                            $($crate::msg::Marshal::write(&$a, _w)?;)*
                            $($($crate::msg::Marshal::write(&$b, _w)?;)*)?
                            Ok(())
                        },
                    )
                }
            )*
        }

        impl $client for $crate::cap::Cap<$name> {
            fn target(&self) -> $crate::cap::CapIdx { self.idx() }
        }

        #[doc = concat!("Server side of the [`", stringify!($name), "`] protocol: one method per operation.")]
        $vis trait $server {
            $(
                $(#[$fm])*
                #[allow(clippy::too_many_arguments)]
                fn $f(&self, req: &mut $crate::rpc::Request<'_>, $($a: <$t as $crate::msg::Marshal>::Decoded),*)
                    -> $crate::Result<$ret>;
            )*
        }

        impl $name {
            /// Decodes a request of this protocol, calls the matching method of
            /// `srv` and encodes its reply. Unknown opcodes give
            /// [`Error::NoSys`]($crate::Error::NoSys), malformed arguments
            /// [`Error::MsgTooShort`]($crate::Error::MsgTooShort) and friends.
            pub fn dispatch<S: $server + ?Sized>(srv: &S, req: &mut $crate::rpc::Request<'_>)
                -> $crate::Result<$crate::msg::MsgTag>
            {
                if req.tag().label() != $label {
                    return Err($crate::Error::BadProto);
                }
                let _op: i32 = $crate::protocol!(@peek $opk req);
                $(
                    if _op == $op {
                        let ($($a,)*) = req.decode(|_r| {
                            $crate::protocol!(@skip $opk _r);
                            Ok(($(<$t as $crate::msg::Marshal>::read(_r)?,)*))
                        })?;
                        let out = srv.$f(req, $($a),*)?;
                        return req.reply(&out);
                    }
                )*
                Err($crate::Error::NoSys)
            }
        }
    };
    (@opcode i32 $op:literal) => { Some($op) };
    (@opcode none $op:literal) => { None };
    (@peek i32 $req:ident) => { $req.opcode()? };
    (@peek none $req:ident) => { 0 };
    (@skip i32 $r:ident) => { <i32 as $crate::msg::Marshal>::read($r)?; };
    (@skip none $r:ident) => { };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cap::{Cap, Untyped};
    use crate::msg::{LongBytes, LongBytesBuf, ReceivedCap};
    use alloc::string::String;
    use alloc::vec::Vec;

    crate::protocol! {
        /// A protocol with one operation of each argument class.
        pub protocol Probe: client ProbeClient, server ProbeServer, label 0x7100, opcode i32 {
            /// Sum.
            0 => fn add(a: u64, b: u64) -> u64;
            /// Echo.
            1 => fn echo(s: &str) -> String;
            /// Array sum.
            2 => fn sum(v: &[u32]) -> u64;
            /// Takes a capability.
            3 => fn take(c: Cap<Untyped>) -> u64;
            /// Mixed.
            5 => fn mixed(a: u8, b: u16, c: bool, d: LongBytes<'_>) -> (u8, u16, bool, LongBytesBuf);
        }
    }

    struct P;
    impl ProbeServer for P {
        fn add(&self, _: &mut Request<'_>, a: u64, b: u64) -> Result<u64> {
            a.checked_add(b).ok_or(Error::Range)
        }
        fn echo(&self, _: &mut Request<'_>, s: String) -> Result<String> {
            Ok(s)
        }
        fn sum(&self, _: &mut Request<'_>, v: Vec<u32>) -> Result<u64> {
            Ok(v.iter().map(|&x| x as u64).sum())
        }
        fn take(&self, _: &mut Request<'_>, c: ReceivedCap) -> Result<u64> {
            Ok(c.idx.0)
        }
        fn mixed(
            &self,
            _: &mut Request<'_>,
            a: u8,
            b: u16,
            c: bool,
            d: Vec<u8>,
        ) -> Result<(u8, u16, bool, LongBytesBuf)> {
            Ok((a, b, !c, LongBytesBuf::new(d)))
        }
    }

    /// Puts a request into this thread's UTCB and dispatches it.
    fn serve(tag: MsgTag, fill: impl FnOnce(&mut [u64; crate::utcb::MR_WORDS])) -> Result<MsgTag> {
        Utcb::with(|u| fill(u.mr()));
        let mut rcv = RcvCapSlots::new(&[CapIdx::from_slot(0x300)]);
        let mut req = Request::new(tag, 0x10, &mut rcv);
        Probe::dispatch(&P, &mut req)
    }

    fn request(f: impl FnOnce(&mut MsgWriter<'_>) -> Result<()>) -> MsgTag {
        Utcb::with(|u| {
            let mut w = MsgWriter::new(u);
            f(&mut w).unwrap();
            w.finish(0x7100).unwrap()
        })
    }

    #[test]
    fn dispatch_decodes_calls_and_encodes() {
        let tag = request(|w| {
            5i32.write(w)?;
            9u8.write(w)?;
            0x1234u16.write(w)?;
            true.write(w)?;
            LongBytes::new(b"abc").write(w)
        });
        let reply = serve(tag, |_| {}).unwrap();
        assert_eq!(reply.label(), 0);
        Utcb::with(|u| {
            let mut r = MsgReader::new(u, reply).unwrap();
            let out = <(u8, u16, bool, LongBytesBuf)>::read(&mut r).unwrap();
            assert_eq!(out, (9, 0x1234, false, b"abc".to_vec()));
        });
    }

    #[test]
    fn bad_requests_get_errors() {
        // Unknown opcode.
        assert_eq!(serve(request(|w| 4i32.write(w)), |_| {}), Err(Error::NoSys));
        // No opcode at all.
        assert_eq!(
            serve(MsgTag::new(0x7100, 0, 0, 0), |_| {}),
            Err(Error::MsgTooShort)
        );
        // Wrong protocol.
        assert_eq!(
            serve(MsgTag::new(0x4000, 1, 0, 0), |_| {}),
            Err(Error::BadProto)
        );
        // Missing argument.
        assert_eq!(
            serve(
                request(|w| {
                    0i32.write(w)?;
                    1u64.write(w)
                }),
                |_| {}
            ),
            Err(Error::MsgTooShort)
        );
        // Truncated string: length says 100, message has 2 words.
        let t = MsgTag::new(0x7100, 2, 0, 0);
        assert_eq!(
            serve(t, |mr| {
                mr[0] = 1;
                mr[1] = 100;
            }),
            Err(Error::MsgTooShort)
        );
        // Capability expected, none sent; then an item that is no received cap.
        assert_eq!(
            serve(request(|w| 3i32.write(w)), |_| {}),
            Err(Error::MsgMissArg)
        );
        let t = MsgTag::new(0x7100, 1, 1, 0);
        assert_eq!(
            serve(t, |mr| {
                mr[0] = 3;
                mr[1] = 8;
                mr[2] = 0;
            }),
            Err(Error::MsgMissArg)
        );
        // Too many words and items for the registers.
        assert_eq!(
            serve(MsgTag::new(0x7100, 63, 1, 0), |_| {}),
            Err(Error::MsgTooLong)
        );
        // Handler error becomes the reply code.
        let t = request(|w| {
            0i32.write(w)?;
            u64::MAX.write(w)?;
            1u64.write(w)
        });
        assert_eq!(serve(t, |_| {}), Err(Error::Range));
        // A received capability is handed to the handler with its slot.
        let t = MsgTag::new(0x7100, 1, 1, 0);
        assert_eq!(
            serve(t, |mr| {
                mr[0] = 3;
                mr[1] = 0x38;
                mr[2] = 0;
            }),
            Ok(MsgTag::new(0, 1, 0, 0))
        );
    }

    /// The generated client stubs against the generated dispatch, over real
    /// IPC through a gate to a server thread.
    #[cfg(feature = "host")]
    #[test]
    fn client_stubs_round_trip_over_ipc() {
        use crate::server::{Server, ServerObject};
        struct Obj;
        impl ServerObject for Obj {
            fn protocols(&self) -> &[(i64, &'static str)] {
                &[(0x7100, "probe")]
            }
            fn dispatch(&self, req: &mut Request<'_>) -> Result<MsgTag> {
                Probe::dispatch(&P, req)
            }
        }
        let gate = crate::env::env().factory().create_gate(None, 0).unwrap();
        let g = gate.cap();
        let (_thread, _join) = crate::host::spawn_thread(move || {
            let mut server = Server::new();
            server.register_gate(g, alloc::sync::Arc::new(Obj)).unwrap();
            let _ = server.serve(crate::ipc::Timeout::Never, |_| true);
        })
        .unwrap();
        let probe: Cap<Probe> = gate.cap().cast();
        assert_eq!(probe.add(40, 2), Ok(42));
        assert_eq!(probe.add(u64::MAX, 1), Err(Error::Range));
        assert_eq!(probe.echo("hello"), Ok(String::from("hello")));
        assert_eq!(probe.sum(&[1, 2, 3, 4]), Ok(10));
        let (a, b, c, d) = probe.mixed(1, 2, true, LongBytes::new(b"xyz")).unwrap();
        assert_eq!((a, b, c, d), (1, 2, false, b"xyz".to_vec()));
        // A capability argument arrives in the server's receive slot.
        let slot = probe.take(gate.cap().untyped()).unwrap();
        assert!(CapIdx(slot).is_valid());
        // L4::Meta is answered for the object.
        use crate::proto::MetaClient;
        let meta: Cap<crate::proto::Meta> = gate.cap().cast();
        assert_eq!(meta.num_interfaces().unwrap().0, 1);
        let crate::rpc::WithCode(_, (proto, name)) = meta.interface(0).unwrap();
        assert_eq!((proto, name.as_str()), (0x7100, "probe"));
        assert_eq!(meta.supports(0x7100).unwrap().0, 1);
        assert_eq!(meta.supports(0x4000).unwrap().0, 0);
        assert_eq!(meta.interface(5), Err(Error::NoEnt));
    }

    /// Thousands of random and mutated messages: the dispatcher must answer
    /// every one with a reply or an error, never panic.
    #[test]
    fn random_messages_never_crash_the_dispatcher() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = [
            request(|w| {
                0i32.write(w)?;
                1u64.write(w)?;
                2u64.write(w)
            }),
            request(|w| {
                1i32.write(w)?;
                "hello".write(w)
            }),
            request(|w| {
                2i32.write(w)?;
                (&[1u32, 2, 3][..]).write(w)
            }),
            request(|w| {
                5i32.write(w)?;
                1u8.write(w)?;
                2u16.write(w)?;
                false.write(w)?;
                LongBytes::new(b"x").write(w)
            }),
        ];
        let (mut ok, mut err) = (0, 0);
        for i in 0..50_000 {
            let r = next();
            let tag = if i % 2 == 0 {
                // Fully random tag and registers.
                MsgTag::new(
                    if r & 1 == 0 {
                        0x7100
                    } else {
                        (r >> 8) as i16 as i64
                    },
                    (r >> 16) as usize % 64,
                    (r >> 24) as usize % 64,
                    0,
                )
            } else {
                // A valid request with one corrupted word or count.
                let v = valid[(r % 4) as usize];
                MsgTag::new(
                    0x7100,
                    (v.words() + (r >> 3) as usize % 3).saturating_sub(1),
                    (r >> 5) as usize % 3,
                    0,
                )
            };
            let words: Vec<u64> = (0..crate::utcb::MR_WORDS).map(|_| next()).collect();
            let small = (next() % 4) as usize;
            let res = serve(tag, |mr| {
                for (k, w) in mr.iter_mut().enumerate() {
                    // Keep some words small so lengths are sometimes plausible.
                    *w = if k < small + 2 {
                        words[k] % 16
                    } else {
                        words[k]
                    };
                }
                if i % 2 == 1 {
                    mr[0] = (words[0] % 7) as u32 as u64;
                }
            });
            match res {
                Ok(t) => {
                    assert!(t.words() + 2 * t.items() <= crate::utcb::MR_WORDS);
                    ok += 1
                }
                Err(e) => {
                    assert!(e.code() < 0);
                    err += 1
                }
            }
        }
        assert!(
            ok > 100 && err > 100,
            "both outcomes exercised: ok={ok} err={err}"
        );
    }
}
