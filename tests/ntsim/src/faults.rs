//! Fault injection: fail the Nth call of a named API, or the Nth failable call of any
//! kind, with that API's documented failure result.
//!
//! Failable calls and what they return when failed: ExAllocatePool2 (NULL),
//! IoCreateDevice, IoCreateSymbolicLink, PsCreateSystemThread, IoInitializeTimer,
//! ZwCreateKey, ZwOpenKey, ZwSetValueKey, IoAllocateDriverObjectExtension,
//! IoConnectInterrupt, IoReportResourceForDetection (STATUS_INSUFFICIENT_RESOURCES),
//! ObReferenceObjectByHandle (STATUS_INVALID_HANDLE), IoAllocateWorkItem, MmMapIoSpace,
//! IoCreateController (NULL).

use crate::machine::Machine;

struct Plan {
    /// `None`: any failable call.
    api: Option<String>,
    nth: u64,
    seen: u64,
}

#[derive(Default)]
pub(crate) struct Faults {
    plans: Vec<Plan>,
    /// (api, how many times it was failed), for reports.
    pub(crate) injected: Vec<&'static str>,
    /// Failable calls seen so far, by any API (to size systematic sweeps).
    pub(crate) failable_calls: u64,
}

impl Faults {
    pub(crate) fn should_fail(&mut self, api: &'static str) -> bool {
        self.failable_calls += 1;
        let mut fail = false;
        for plan in &mut self.plans {
            if plan.api.as_deref().is_none_or(|a| a == api) {
                plan.seen += 1;
                if plan.seen == plan.nth {
                    fail = true;
                }
            }
        }
        if fail {
            self.injected.push(api);
        }
        fail
    }
}

/// Arms fault injection on a machine.
pub struct FaultHandle<'m> {
    pub(crate) machine: &'m Machine,
}

impl FaultHandle<'_> {
    /// Fails the `nth` (1-based) call of `api`.
    pub fn fail_nth(&self, api: &str, nth: u64) {
        self.machine.lock().faults.plans.push(Plan { api: Some(api.to_owned()), nth, seen: 0 });
    }

    /// Fails the `nth` (1-based) failable call, whichever API it is.
    pub fn fail_nth_any(&self, nth: u64) {
        self.machine.lock().faults.plans.push(Plan { api: None, nth, seen: 0 });
    }

    /// The APIs failed so far, in order.
    pub fn injected(&self) -> Vec<&'static str> {
        self.machine.lock().faults.injected.clone()
    }

    /// How many failable calls were made so far.
    pub fn failable_calls(&self) -> u64 {
        self.machine.lock().faults.failable_calls
    }
}
