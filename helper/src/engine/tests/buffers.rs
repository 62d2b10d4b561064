//! The engine's spare buffers: what the data path hands back is reused, within bounds.

use crate::engine::{Outputs, MAX_SPARE_BUFFERS, NEW_BUFFER_BYTES};

#[test]
fn a_recycled_buffer_carries_the_next_packet() {
    let mut out = Outputs::default();
    let first = out.copy_of(&[1; 100]);
    let storage = first.as_ptr();
    out.recycle(first);
    let second = out.copy_of(&[2; 1400]);
    assert_eq!(second.as_ptr(), storage, "a new buffer was allocated although one was spare");
    assert_eq!(second, vec![2; 1400], "the reused buffer holds exactly the new packet");
}

#[test]
fn small_buffers_are_freed_and_the_spares_are_bounded() {
    let mut out = Outputs::default();
    // A relay message sized to fit would have to grow for a full-size packet.
    out.recycle(Vec::with_capacity(64));
    assert!(out.spare.is_empty());
    for _ in 0..MAX_SPARE_BUFFERS + 10 {
        out.recycle(Vec::with_capacity(NEW_BUFFER_BYTES));
    }
    assert_eq!(out.spare.len(), MAX_SPARE_BUFFERS);
}
