"""The Lambda function behind POST /api/conversations/{conversation_id}/stop: wiring only.

Everything it does lives in the ``openhands_stop`` package (the layer in ``layers/common``).

Init allocates about a hundred thousand objects and frees almost none, so the cycle
collector's passes during it (a tenth of the import time, measured in the README's
Performance section) find nothing worth the cost: it is off while the handler is built.
What init built then lives as long as the process, so it is frozen out of every later
collection, which keeps warm requests' collections small. Reference counting frees memory
as usual throughout.
"""

import gc

gc.disable()
try:
    from openhands_stop.edge.lambda_entry import build_handler

    handler = build_handler()
finally:
    if not gc.get_freeze_count():  # once per process (tests import this module repeatedly)
        gc.freeze()
    gc.enable()
