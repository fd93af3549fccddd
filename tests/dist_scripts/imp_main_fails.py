"""torchrun --nproc_per_node 2 imp_main_fails.py PROBE OUT

An IMP plain loop on 2 ranks (gloo) in which the main process fails where only it works: reading
the run's files (a truncated metrics.json), writing them (a round folder that cannot be created),
or taking the lock (held by another process). Every rank records the error it raised; before, the
other rank waited at the next collective until the process group timed out.
"""

import sys

import torch
import torch.distributed as dist
from common import dump, finish, tiny_model
from transformers import BertForSequenceClassification

from hf_tickets.training.imp import IMPConfig, IMPManager

probe, out = sys.argv[1], sys.argv[2]
dist.init_process_group("gloo")
torch.manual_seed(0)
model = tiny_model(BertForSequenceClassification)
record = {}
try:
    manager = IMPManager(model, IMPConfig(imp_rounds=2), out)
    for rnd in manager.rounds():
        rnd.finish({"eval_accuracy": 0.5})
except Exception as err:
    record = {"type": type(err).__name__, "error": str(err)}
dump(probe, record)
finish()
