#!/usr/bin/env python3
"""Writes the small seed corpora of the fuzz targets to fuzz/seeds/TARGET/ (run from anywhere).

The seeds are generated, never copied from real data sets; each is a valid or nearly valid
input so the fuzzer starts inside the format. Targets whose first byte(s) choose options get
one seed per option.
"""
import gzip
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


put("text_corpus", "words", "the cat sat on the mat .\n\n a dog  ran\n")
put("text_corpus", "unicode", "caf\u00e9 na\u00efve \U0001F642\r\nline\ttwo\n")
put("text_corpus", "bad_utf8", b"fine\n\xff\n")

put("labelled", "plain", "\x001 a great film\n\n0\tdull , slow\n")
put("labelled", "allowed", "\x011 fine\n2 unknown label\n")
put("labelled", "no_text", "\x00pos   \t \n")

CONLLU = (
    "# sent_id = 1\n# text = I can't go.\n"
    "1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n"
    "2-3\tcan't\t_\t_\t_\t_\t_\t_\t_\t_\n"
    "2\tca\tcan\tAUX\tMD\t_\t4\taux\t_\t_\n"
    "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
    "3.1\tx\tx\tX\tX\t_\t_\t_\t_\t_\n"
    "4\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n\n"
    "1\tYes\tyes\tINTJ\tUH\t_\t0\troot\t_\t_\n"
)
for i in range(5):
    put("conllu", f"col{i}", chr(i) + CONLLU)
put("conllu", "short_row", "\x001\tI\tI\tPRON\n")

put("conll", "two", "the DT\ncat NN\n\nran VBD\n")
put("conll", "three", "the DT\ncat NN extra\n")

put("pairs", "fra01", "\x04Go.\tVa !\tCC-BY\nHi.\tSalut !\tCC-BY\n")
put("pairs", "fra10", "\x01Go.\tVa !\n\nRun!\tCours !\n")
put("pairs", "fra20", "\x02Go.\tVa !\tCC-BY\n")
put("pairs", "empty_side", "\x04Go.\t \n")

CSV = '"Month","y","x","z"\n"1949-01",112,1.5,0\n"1949-02",,2.5,1\n"1949-03",132,NA,2\n"1949-04",129,4,nan\n'
for pick in range(16):
    put("series_csv", f"p{pick}", chr(pick) + CSV)
put("series_csv", "ragged", "\x00y,x\n1,2\n3\n")
put("series_csv", "quoted", '\x05y,x\n"1","2"\n"3\n4",5\n')
put("series_csv", "inf", "\x00y\n1e999\n")


def idx_images(n, rows, cols, pixels):
    return struct.pack(">IIII", 2051, n, rows, cols) + bytes(pixels)


def idx_labels(labels):
    return struct.pack(">II", 2049, len(labels)) + bytes(labels)


def mnist(flags, images, labels):
    return bytes([flags]) + struct.pack("<H", len(images)) + images + labels


img = idx_images(2, 2, 3, [0, 255, 51, 0, 0, 0, 1, 2, 3, 4, 5, 6])
lab = idx_labels([7, 3])
for flags in range(4):
    put("mnist_idx", f"ok{flags}", mnist(flags, img, lab))
put("mnist_idx", "gz_raw", mnist(0, gzip.compress(img, mtime=0), gzip.compress(lab, mtime=0)))
put("mnist_idx", "short", mnist(0, idx_images(2, 2, 3, [0] * 11), lab))
put("mnist_idx", "bad_label", mnist(0, img, idx_labels([1, 12])))

put("config_toml", "ok", 'cell = "gru"\nhidden = 64\nbatch_size = 8\nlr = 0.01\ndropout = 0.1\n')
put("config_toml", "bad", "hidden = 64\nlr = \n")
put("config_toml", "table", '[model]\ncell = "lstm"\n')
put("config_json", "ok", json.dumps({"cell": "lstm", "hidden": 32, "max-steps": 10, "lr": 0.5}))
put("config_json", "bad", '{\n  "hidden": 3,\n  oops\n}\n')
put("config_json", "unknown", '{"colour": "red"}')

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
put("vocab_json", "ok", json.dumps({"tokens": SPECIALS + ["the", "cat"]}))
put("vocab_json", "dup", json.dumps({"tokens": SPECIALS + ["a", "a"]}))
put("vocab_json", "short", json.dumps({"tokens": ["a"]}))

vocab = {t: i for i, t in enumerate(SPECIALS + ["t", "h", "e", "th", "the", "\u0120", "c", "a"])}
tokenizer = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, t in enumerate(SPECIALS)
    ],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                      "use_regex": True},
    "post_processor": None,
    "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
              "continuing_subword_prefix": None, "end_of_word_suffix": None,
              "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
              "vocab": vocab, "merges": [["t", "h"], ["th", "e"]]},
}
put("tokenizer_json", "bpe", json.dumps(tokenizer, indent=1))
wp = dict(tokenizer)
wp["model"] = {"type": "WordPiece", "unk_token": "<unk>", "continuing_subword_prefix": "##",
               "max_input_chars_per_word": 100, "vocab": vocab}
wp["pre_tokenizer"] = {"type": "Whitespace"}
wp["decoder"] = {"type": "WordPiece", "prefix": "##", "cleanup": True}
put("tokenizer_json", "wordpiece", json.dumps(wp))
uni = dict(tokenizer)
uni["model"] = {"type": "Unigram", "unk_id": 1, "byte_fallback": False,
                "vocab": [[t, -1.0] for t in vocab]}
uni["normalizer"] = {"type": "Lowercase"}
put("tokenizer_json", "unigram", json.dumps(uni))
put("tokenizer_json", "bad", '{\n  "version": "1.0",\n  oops\n}\n')

state = {"format_version": 1, "epoch": 2, "step": 40, "seed": 7, "best_metric": 0.5,
         "best_metric_name": "val_loss", "learning_rate": 0.001, "dropout_calls": 3,
         "optimizer": {"kind": "adamw", "t": 40}, "trainer": {"batch": 3, "rng": [1, 2]}}
put("checkpoint_json", "state", json.dumps(state, indent=2))
put("checkpoint_json", "v2", json.dumps(dict(state, format_version=2)))
put("checkpoint_json", "config", json.dumps({"task": "char-lm", "model": {"hidden": 8, "cell": "lstm"}}))


def safetensors(tensors):
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "f32", safetensors({"w": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                                       "b": ("F32", [2], struct.pack("<2f", 0.5, -1))}))
put("safetensors", "mixed", safetensors({"i": ("I64", [1], struct.pack("<q", 5)),
                                         "h": ("F16", [2], b"\x00\x3c\x00\xc0"),
                                         "u": ("U8", [3], b"\x01\x02\x03"),
                                         "z": ("BF16", [0], b"")}))
put("safetensors", "truncated", safetensors({"w": ("F32", [2, 2], b"\x00" * 16)})[:-5])
