#!/usr/bin/env python3
"""Small synthetic data for the GPU kit when ../shared/data is absent (same files and formats as
the heads of the real data sets): char_lm.txt, classify_train.txt, classify_valid.txt (label
text), seq2seq.tsv (source TAB target). Seeded, so every kit gets the same files."""
import os
import random
import sys

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = random.Random(0)
words = ("the king queen lord lady good bad love hate night day sword crown fair foul sweet bitter "
         "speak hear come go war peace gentle noble poor rich heart hand eye").split()
pos, neg = "good love fair sweet gentle noble rich peace".split(), "bad hate foul bitter poor war".split()

with open(os.path.join(out, "char_lm.txt"), "w") as f:
    n = 0
    while n < 200_000:
        speaker = rng.choice(["KING", "QUEEN", "LORD", "LADY"])
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + ".\n"
        text = f"{speaker}:\n{line}\n"
        f.write(text)
        n += len(text)


def review(label):
    ws = [rng.choice(words) for _ in range(rng.randint(5, 15))]
    for _ in range(3):
        ws[rng.randrange(len(ws))] = rng.choice(pos if label else neg)
    return f"{label} {' '.join(ws)}\n"


with open(os.path.join(out, "classify_train.txt"), "w") as f:
    f.writelines(review(rng.randint(0, 1)) for _ in range(2000))
with open(os.path.join(out, "classify_valid.txt"), "w") as f:
    f.writelines(review(rng.randint(0, 1)) for _ in range(300))
with open(os.path.join(out, "seq2seq.tsv"), "w") as f:
    for _ in range(2000):
        src = [rng.choice(words) for _ in range(rng.randint(2, 6))]
        f.write(" ".join(src) + " .\t" + " ".join(reversed(src)) + " .\n")
