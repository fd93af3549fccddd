"""accelerate launch --cpu --num_processes 2 single_process_warning.py PROBE

That launch line starts ONE process; the script must be told so, loudly.
"""

import sys
import warnings

from accelerate import Accelerator
from common import dump, finish

from hf_tickets.core.collectives import world_size
from hf_tickets.training.launch import requested_num_processes, warn_if_single_process_requested

accelerator = Accelerator(cpu=True)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    message = warn_if_single_process_requested()
warn_if_single_process_requested()  # as a script would call it: printed to stderr
dump(
    sys.argv[1],
    {
        "message": message,
        "warned": [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)],
        "world_size": world_size(),
        "num_processes": accelerator.num_processes,
        "requested": requested_num_processes(),
    },
)
finish()
