"""`dist-sqz deep-compress`: Deep Compression (Han, Mao & Dally, ICLR 2016) of a trained run.

The pipeline, on the run's final weights (`checkpoints/last.pt`):

1. **Prune**: keep the largest `keep` fraction of each conv/linear weight by magnitude.
   Per layer by default (`scope layer`): every layer keeps exactly that fraction, as the
   SqueezeNet paper states it ("33% of weights kept"), and thin layers (SqueezeNet's 1x1
   squeeze convs) cannot be pruned away by a global threshold set by the large ones;
   `scope global` ranks all weights together instead. Biases stay fp32. (On digits with
   the 1000-way head, a global threshold prunes the 990 unused class rows first: it kept
   0.1% of squeezenet1_1's classifier and 48-91% of each feature layer, and lost no
   accuracy; per layer is the paper's setting and the harder one.)
2. **Fine-tune with the mask fixed**: `prune_steps` SGD steps (default: the run's step
   budget) on the run's own data and recipe (augmentation, label smoothing), pruned
   weights and their gradients held at 0.
3. **Share weights** per layer and per bit width B: k-means (2^B centroids, linear
   initialisation between the layer's min and max kept weight, as the paper found best) over
   the kept weights, then `share_steps` steps fine-tuning the centroids: each centroid moves
   by the mean gradient of the weights that share it (the paper sums them; the mean is the
   same direction with a step size that does not grow with the cluster).
4. **Huffman-code** the cluster indices and the gaps between kept positions (`huffman.py`;
   a gap longer than 255 is split with filler symbols 0, each meaning "255 further"), and
   write a real file: a JSON header (model, shapes, code tables), the codebooks and the
   fp32 rest, then the two bitstreams. `decode` reads it back into a state_dict.

Sizes are in MB of 2^20 bytes, as the paper's (AlexNet 240 MB, SqueezeNet 4.8 MB).
"""

from dist_sqz.paper.deep_compress.codec import decode, gap_symbols, positions_from
from dist_sqz.paper.deep_compress.pipeline import compress, format_table
from dist_sqz.paper.deep_compress.prune import magnitude_masks
from dist_sqz.paper.deep_compress.rundata import RunData, held_out_accuracy
from dist_sqz.paper.deep_compress.share import kmeans_1d

__all__ = [
    "RunData",
    "compress",
    "decode",
    "format_table",
    "gap_symbols",
    "held_out_accuracy",
    "kmeans_1d",
    "magnitude_masks",
    "positions_from",
]
