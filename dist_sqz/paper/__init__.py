"""The SqueezeNet paper's own experiments: the design space of Fig. 3 (`design_space`) and
Deep Compression of Table 2 (`deep_compress`, with its Huffman codec)."""
