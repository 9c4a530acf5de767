//! Virtual interrupt lines, interrupt objects, controller objects and mapped I/O space.

#[derive(Default)]
pub(crate) struct Interrupts {
    connected: usize,
    mapped: usize,
    controllers: usize,
}

impl Interrupts {
    pub(crate) fn connected(&self) -> usize {
        self.connected
    }
    pub(crate) fn mapped(&self) -> usize {
        self.mapped
    }
    pub(crate) fn controllers(&self) -> usize {
        self.controllers
    }
}
