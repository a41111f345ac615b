import torch

# Tiny test models run fastest on one thread, and a 2-core CI box has none to spare.
torch.set_num_threads(1)

import os
import tempfile

# Cost curves measured by tests (tiny models) must not land in the user's cache.
os.environ.setdefault("RETRODRAFT_COST_CACHE", tempfile.mkdtemp(prefix="retrodraft-cost-"))
