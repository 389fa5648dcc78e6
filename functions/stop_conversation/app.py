"""The Lambda function behind POST /api/conversations/{conversation_id}/stop: wiring only.

Everything it does lives in the ``openhands_stop`` package (the layer in ``layers/common``).
"""

from openhands_stop.edge.lambda_entry import build_handler

handler = build_handler()
