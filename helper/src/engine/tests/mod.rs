//! Engine tests on an in-memory network with a fake clock (see `net`).

mod buffers;
mod changes;
mod connect;
mod health;
mod mesh;
mod net;
mod sessions;
mod suspend;
mod turn_server;
