import torch

# Tiny test models run fastest on one thread, and a 2-core CI box has none to spare.
torch.set_num_threads(1)
