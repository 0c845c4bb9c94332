//! Operations on kernel objects: the factory, IPC gates, threads.

use crate::cap::{self, Cap, Factory, IpcGate, OwnedCap, Thread};
use crate::error::{Error, Result};
use crate::platform;

impl Cap<Factory> {
    /// Creates an IPC gate (`l4_factory_create_gate`), bound to `thread` with
    /// `label` if a thread is given. Labels must be 4-aligned: the kernel
    /// puts the caller's rights into the low two bits.
    pub fn create_gate(self, thread: Option<Cap<Thread>>, label: u64) -> Result<OwnedCap<IpcGate>> {
        if label & 3 != 0 {
            return Err(Error::Inval);
        }
        let gate = cap::alloc::<IpcGate>()?;
        platform::create_gate(gate.idx(), thread.map(|t| t.idx()), label)?;
        Ok(gate)
    }
}

impl Cap<IpcGate> {
    /// Binds the gate to `thread` with `label` (`l4_ipc_gate_bind_thread`):
    /// from now on calls through the gate arrive at that thread.
    pub fn bind_thread(self, thread: Cap<Thread>, label: u64) -> Result<()> {
        crate::ipc::bind_gate(self.idx(), thread.idx(), label)
    }
}

impl Cap<Thread> {
    /// Sets the thread's pager (`l4_thread_control_pager` +
    /// `l4_thread_control_commit`): the capability its page faults are sent
    /// to, looked up in the thread's own task.
    pub fn set_pager<T: crate::cap::CapKind>(self, pager: Cap<T>) -> Result<()> {
        platform::thread_set_pager(self.idx(), pager.idx())
    }
}

/// The calling thread's capability.
pub fn current_thread() -> Cap<Thread> {
    Cap::from_idx(platform::current_thread())
}
