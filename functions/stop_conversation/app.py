"""The Lambda function behind POST /api/conversations/{conversation_id}/stop: wiring only.

Everything it does lives in the ``openhands_stop`` package (the layer in ``layers/common``).

Init allocates many long-lived objects and frees almost none, so the cycle collector's
passes during it find nothing worth their cost (docs/performance.md): it is off while the
handler is built. What init built then lives as long as the process, so it is frozen out of
every later collection, which keeps warm requests' collections small. Reference counting
frees memory as usual throughout, and the collector is on again once init ends, whether it
succeeded or not (tests/test_import_budget.py).

pydantic looks for plugins when it builds its first model, reading the entry points of every
distribution on the path; the function uses none, so the search is skipped (pydantic's
documented ``PYDANTIC_DISABLE_PLUGINS``). A deployment that wants a pydantic plugin sets the
variable itself (an empty value loads every installed plugin).
"""

import gc
import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
gc.disable()
try:
    from openhands_stop.lambda_entry import build_handler

    handler = build_handler()
finally:
    if not gc.get_freeze_count():  # once per process (tests import this module repeatedly)
        gc.freeze()
    gc.enable()
