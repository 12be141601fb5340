"""Canonical Huffman coding of small-integer streams, vectorised with numpy.

Code lengths come from the classic two-smallest merge, then are limited to `MAX_BITS`
(16) by the JPEG standard's adjustment (ITU T.81, Annex K.3), which keeps the code complete
and costs almost nothing on skewed data; symbols are then given canonical codes in (length,
symbol) order, so a code table is just each used symbol's length. Decoding looks up the
next 16 bits in a 65,536-entry table.
"""

from __future__ import annotations

import heapq

import numpy as np

MAX_BITS = 16


def code_lengths(counts: dict[int, int]) -> dict[int, int]:
    """Huffman code length per symbol of `counts` (symbols with count 0 are left out),
    limited to MAX_BITS."""
    used = {s: c for s, c in counts.items() if c > 0}
    if not used:
        return {}
    if len(used) == 1:
        return {next(iter(used)): 1}
    heap = [(c, s, [s]) for s, c in used.items()]
    heapq.heapify(heap)
    depth = dict.fromkeys(used, 0)
    while len(heap) > 1:
        c1, k1, a = heapq.heappop(heap)
        c2, k2, b = heapq.heappop(heap)
        for s in a + b:
            depth[s] += 1
        heapq.heappush(heap, (c1 + c2, min(k1, k2), a + b))
    longest = max(depth.values())
    if longest <= MAX_BITS:
        return depth
    # Annex K.3: take two codes of the longest length, give one the length of a shorter
    # code's prefix and move that code down one level, until none is longer than MAX_BITS.
    per_length = [0] * (longest + 1)
    for d in depth.values():
        per_length[d] += 1
    for i in range(longest, MAX_BITS, -1):
        while per_length[i] > 0:
            j = i - 2
            while per_length[j] == 0:
                j -= 1
            per_length[i] -= 2
            per_length[i - 1] += 1
            per_length[j + 1] += 2
            per_length[j] -= 1
    # The most frequent symbols get the shortest of the adjusted lengths.
    order = sorted(used, key=lambda s: (-used[s], s))
    lengths = [n for n in range(1, MAX_BITS + 1) for _ in range(per_length[n])]
    return dict(zip(order, lengths, strict=True))


def canonical_codes(lengths: dict[int, int]) -> dict[int, int]:
    """Canonical code (an int of `lengths[s]` bits) per symbol."""
    codes, code, prev = {}, 0, 0
    for s in sorted(lengths, key=lambda s: (lengths[s], s)):
        code <<= lengths[s] - prev
        codes[s] = code
        code += 1
        prev = lengths[s]
    return codes


def counts_of(symbols: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(symbols, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def encode(symbols: np.ndarray, lengths: dict[int, int], chunk: int = 1 << 20) -> bytes:
    """The bitstream of `symbols` (most significant bit first), zero-padded to a byte.
    Its length in bits is exactly the sum of the symbols' code lengths."""
    codes = canonical_codes(lengths)
    size = max(lengths.keys()) + 1 if lengths else 1
    code_tab = np.zeros(size, np.uint32)
    len_tab = np.zeros(size, np.int64)
    for s, n in lengths.items():
        code_tab[s], len_tab[s] = codes[s], n
    j = np.arange(MAX_BITS)
    parts = []
    for start in range(0, len(symbols), chunk):
        sym = symbols[start : start + chunk]
        n = len_tab[sym][:, None]
        bits = (code_tab[sym][:, None] >> np.maximum(n - 1 - j, 0)) & 1
        parts.append(bits[j < n].astype(np.uint8))
    flat = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return np.packbits(flat).tobytes()


def decode(data: bytes, lengths: dict[int, int], count: int) -> np.ndarray:
    """`count` symbols back from `data`, a bitstream from `encode` with the same lengths."""
    if count == 0:
        return np.zeros(0, np.int64)
    codes = canonical_codes(lengths)
    sym_tab = np.zeros(1 << MAX_BITS, np.int64)
    len_tab = np.zeros(1 << MAX_BITS, np.int64)
    for s, n in lengths.items():
        lo = codes[s] << (MAX_BITS - n)  # every 16-bit window starting with this code
        sym_tab[lo : lo + (1 << (MAX_BITS - n))] = s
        len_tab[lo : lo + (1 << (MAX_BITS - n))] = n
    bits = np.concatenate(
        [np.unpackbits(np.frombuffer(data, np.uint8)), np.zeros(MAX_BITS, np.uint8)]
    )
    windows = np.zeros(len(bits) - MAX_BITS, np.uint32)
    for k in range(MAX_BITS):
        windows |= bits[k : k + len(windows)].astype(np.uint32) << (MAX_BITS - 1 - k)
    step_of = len_tab.tolist()
    symbol_of = sym_tab.tolist()
    window = memoryview(windows)
    out = [0] * count
    pos = 0
    for i in range(count):
        w = window[pos]
        out[i] = symbol_of[w]
        pos += step_of[w]
    return np.asarray(out, np.int64)


def total_bits(counts: dict[int, int], lengths: dict[int, int]) -> int:
    """Sum of the code lengths of symbols occurring `counts` times: the size of their
    Huffman bitstream in bits."""
    return sum(lengths[s] * c for s, c in counts.items())
