"""Forward+backward time of the quantum head vs the encoder it sits on, same batch, same process.

    python benchmarks/head_overhead.py                 # random bert-base-sized encoder (768-d), offline
    python benchmarks/head_overhead.py --encoder minilm --out-dim 128

Prints the median time of each and their ratio (goal: head <= 5% of the encoder). Ratios, not seconds,
are what to compare across machines.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default=None, help="hub id / folder / 'minilm'; default: random bert-base config")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--out-dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)

    from qcompress.encoder import load_encoder, mean_pool
    from qcompress.quantum import QuantumHead, encode_angles

    if args.encoder is None:
        from transformers import BertConfig, BertModel

        encoder, name = BertModel(BertConfig()), "random bert-base-uncased config (768-d, 12 layers)"
    else:
        encoder, _ = load_encoder(args.encoder)
        name = args.encoder
    hidden = encoder.config.hidden_size
    head = QuantumHead(hidden, args.out_dim)
    ids = torch.randint(1000, 2000, (args.batch, args.seq_len))
    mask = torch.ones_like(ids)
    pooled = torch.randn(args.batch, hidden)

    def encoder_step() -> None:
        encoder.zero_grad(set_to_none=True)
        out = mean_pool(encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        out.sum().backward()

    def head_step() -> None:
        head.zero_grad(set_to_none=True)
        x = pooled.clone().requires_grad_()
        head(encode_angles(x)).sum().backward()

    t_head = median_time(head_step, args.repeats * 10)
    t_enc = median_time(encoder_step, args.repeats)
    print(f"encoder: {name}; batch {args.batch} x {args.seq_len} tokens; head {hidden} -> {args.out_dim} qubits")
    print(f"threads: {torch.get_num_threads()}")
    print(f"encoder forward+backward: {t_enc * 1e3:.1f} ms (median of {args.repeats})")
    print(f"head    forward+backward: {t_head * 1e3:.3f} ms (median of {args.repeats * 10})")
    print(f"head / encoder: {t_head / t_enc:.4%}  (goal <= 5%)")


if __name__ == "__main__":
    main()
