//! Feeds arbitrary frames to the decoder. Besides "never panics", anything that decodes must
//! survive our encoder and decode back to the same message: a frame we relay must not change
//! meaning.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = ke_message::decode(data) else {
        return;
    };
    let frame = ke_message::encode_frame(&message);
    let again = ke_message::decode(&frame).expect("our own encoding decodes");
    // Integral floats become integers on re-encoding (as in Go), so compare the re-encoded bytes,
    // which must be stable from the first re-encoding on.
    assert_eq!(ke_message::encode_frame(&again), frame);
});
