//! `vocab.json` of a checkpoint (`Vocab::from_json`), then encoding and decoding with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rnn_train::data::Vocab;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = Vocab::from_json(json) {
        assert!(v.len() >= 4);
        for (i, t) in v.tokens().iter().enumerate() {
            assert_eq!(v.id(t) as usize, i);
            assert_eq!(v.token(i as u32), t);
        }
        assert_eq!(
            v.encode(["<pad>", "<unk>", "<bos>", "<eos>"]),
            vec![0, 1, 2, 3]
        );
    }
});
