//! The store's tests, by area, all in simulated time: the store's clock is
//! a `ManualClock`, nothing sleeps.  One binary, one module per area.

mod claims;
mod console;
mod control;
mod enqueue;
mod extensions;
mod leases;
mod notify;
mod reads;
mod remote;
mod retries;
mod rollups;
mod state;
mod support;
mod upkeep;
